package director

import (
	"context"
	"testing"
	"time"

	"github.com/fedplane/fedplane/job"
)

// TestRoundDeadlineAgainstDrain runs a round's deadline against the
// disarming that Drain and Close do, many times. The deadline (settle)
// once took
// exp.mu and then the lifecycle's lock, and disarmAll the two the other way
// round: a deadline firing at a stop hung the director.
func TestRoundDeadlineAgainstDrain(t *testing.T) {
	d := mustNew(t, testCfg(t, newFakeClock()))
	exp := newExperiment("no-such-experiment", &job.Manifest{Rounds: 2}, []string{"a"}, 0, nil)
	d.lc.mu.Lock()
	d.lc.running[exp.id] = exp
	d.lc.mu.Unlock()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 2000 {
			fired := make(chan struct{})
			go func() { d.settle(context.Background(), exp, 0, true); close(fired) }()
			d.disarmAll()
			<-fired
		}
	}()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("a round's deadline and disarmAll deadlocked")
	}
}
