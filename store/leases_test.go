package store

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/fedplane/fedplane/store/storetest"
)

func TestLeaseLifecycle(t *testing.T) {
	storetest.EachBackend(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		clock := newClock()
		db := mustOpen(t, dsn, clock)
		type step struct {
			name      string
			holder    string
			advance   time.Duration
			release   bool
			wantHeld  bool
			wantEpoch int64
		}
		steps := []step{
			{name: "first take", holder: "a", wantHeld: true, wantEpoch: 1},
			{name: "renewal keeps the epoch", holder: "a", advance: 5 * time.Second, wantHeld: true, wantEpoch: 1},
			{name: "another is refused while it lasts", holder: "b", advance: 9 * time.Second, wantHeld: false},
			{name: "taken over once expired", holder: "b", advance: time.Second, wantHeld: true, wantEpoch: 2},
			{name: "the old holder is refused", holder: "a", wantHeld: false},
			{name: "released", holder: "b", release: true},
			{name: "free at once after release", holder: "a", wantHeld: true, wantEpoch: 3},
		}
		for _, s := range steps {
			clock.Add(s.advance)
			if s.release {
				if err := db.ReleaseLease(ctx, "round", s.holder); err != nil {
					t.Fatalf("%s: %v", s.name, err)
				}
				continue
			}
			held, epoch, err := db.AcquireLease(ctx, "round", s.holder, 10*time.Second)
			if err != nil {
				t.Fatalf("%s: %v", s.name, err)
			}
			if held != s.wantHeld || epoch != s.wantEpoch {
				t.Fatalf("%s: got held %v epoch %d, want %v %d", s.name, held, epoch, s.wantHeld, s.wantEpoch)
			}
		}
		// Releasing what one does not hold changes nothing.
		if err := db.ReleaseLease(ctx, "round", "b"); err != nil {
			t.Fatal(err)
		}
		if held, _, _ := db.AcquireLease(ctx, "round", "b", time.Second); held {
			t.Fatal("b took a's lease after releasing a lease it did not hold")
		}
		for _, bad := range [][2]string{{"", "a"}, {"x", ""}} {
			if _, _, err := db.AcquireLease(ctx, bad[0], bad[1], time.Second); err == nil {
				t.Errorf("AcquireLease(%q, %q): got nil error", bad[0], bad[1])
			}
		}
		if _, _, err := db.AcquireLease(ctx, "x", "a", 0); err == nil {
			t.Error("AcquireLease with ttl 0: got nil error")
		}
	})
}

// TestLeaseRace has holders on two handles of one database (two directors)
// race for a lease many times over: each time exactly one wins, and the
// epoch moves by one each time the winner changes.
func TestLeaseRace(t *testing.T) {
	storetest.EachBackend(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		clock := newClock()
		dbs := []*DB{mustOpen(t, dsn, clock), mustOpen(t, dsn, clock)}
		const rounds, perDB = 30, 4
		lastHolder, lastEpoch := "", int64(0)
		for r := range rounds {
			type win struct {
				holder string
				epoch  int64
			}
			var mu sync.Mutex
			var wins []win
			var wg sync.WaitGroup
			for i, db := range dbs {
				for j := range perDB {
					holder := string(rune('a'+i)) + string(rune('0'+j))
					wg.Go(func() {
						held, epoch, err := db.AcquireLease(ctx, "race", holder, time.Second)
						if err != nil {
							t.Error(err)
							return
						}
						if held {
							mu.Lock()
							wins = append(wins, win{holder, epoch})
							mu.Unlock()
						}
					})
				}
			}
			wg.Wait()
			// The holder of the previous round may renew; anyone else wins
			// only on an expired lease, which this round's clock makes it.
			if len(wins) != 1 {
				t.Fatalf("round %d: %d winners %v, want 1", r, len(wins), wins)
			}
			w := wins[0]
			want := lastEpoch + 1
			if w.holder == lastHolder {
				want = lastEpoch
			}
			if w.epoch != want {
				t.Fatalf("round %d: %s won with epoch %d after %s at %d, want %d", r, w.holder, w.epoch, lastHolder, lastEpoch, want)
			}
			lastHolder, lastEpoch = w.holder, w.epoch
			clock.Add(2 * time.Second) // the lease expires before the next round
		}
	})
}

// TestFence: a handle fenced on a lease writes while its holder has it, and
// once the lease passed to another holder (on another handle, as another
// director) every write transaction of it fails with ErrFenced and changes
// nothing; an unfenced handle writes as before.
func TestFence(t *testing.T) {
	storetest.EachBackend(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		clock := newClock()
		a, b := mustOpen(t, dsn, clock), mustOpen(t, dsn, clock)
		held, epoch, err := a.AcquireLease(ctx, "coordinator", "a", 10*time.Second)
		if err != nil || !held {
			t.Fatalf("a takes the lease: %v %v", held, err)
		}
		a.Fence("coordinator", "a", epoch)
		if _, err := a.UpsertEnvoy(ctx, Envoy{Name: "site-1"}); err != nil {
			t.Fatalf("write while holding the lease: %v", err)
		}
		l, err := b.GetLease(ctx, "coordinator")
		if err != nil || l.Holder != "a" || l.Epoch != epoch || !l.Held(clock.Now()) {
			t.Fatalf("GetLease: %+v, %v; want held by a at epoch %d", l, err, epoch)
		}
		clock.Add(11 * time.Second)
		if _, err := a.UpsertEnvoy(ctx, Envoy{Name: "site-2"}); !errors.Is(err, ErrFenced) {
			t.Fatalf("write after the lease expired: %v, want ErrFenced", err)
		}
		if held, _, err := b.AcquireLease(ctx, "coordinator", "b", 10*time.Second); err != nil || !held {
			t.Fatalf("b takes over: %v %v", held, err)
		}
		if _, err := a.UpsertEnvoy(ctx, Envoy{Name: "site-3"}); !errors.Is(err, ErrFenced) {
			t.Fatalf("write after the lease passed to b: %v, want ErrFenced", err)
		}
		if _, err := b.UpsertEnvoy(ctx, Envoy{Name: "site-4"}); err != nil {
			t.Fatalf("unfenced write: %v", err)
		}
		for name, want := range map[string]bool{"site-1": true, "site-2": false, "site-3": false, "site-4": true} {
			_, err := b.GetEnvoy(ctx, name)
			if got := err == nil; got != want {
				t.Errorf("envoy %s stored: %v, want %v (%v)", name, got, want, err)
			}
		}
	})
}
