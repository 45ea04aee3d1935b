package director

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/fedplane/fedplane/job"
	"github.com/fedplane/fedplane/store"
)

// TestVerdict walks the participation rule over the ways a round's members
// report or miss it.
func TestVerdict(t *testing.T) {
	type state struct {
		reported []string
		offline  []string
		failed   []string
		refused  []string
	}
	tests := []struct {
		name     string
		quorum   int // min_envoys_per_round; 0 is all
		perRound float64
		sampled  []string
		st       state
		deadline bool
		want     verdict
		reason   string // in a failure's reason
	}{
		{name: "all reported", st: state{reported: []string{"a", "b", "c"}}, want: closeRound},
		{name: "waiting for one", st: state{reported: []string{"a", "b"}}, want: keepWaiting},
		{name: "default quorum: an offline one is waited for until the deadline", st: state{reported: []string{"a", "b"}, offline: []string{"c"}}, want: keepWaiting},
		{name: "default quorum: deadline without it fails", st: state{reported: []string{"a", "b"}, offline: []string{"c"}}, deadline: true, want: failJob, reason: "c went offline"},
		{name: "default quorum: a failure fails at once", st: state{reported: []string{"a"}, failed: []string{"c"}}, want: failJob, reason: "cannot reach its quorum of 3"},
		{name: "quorum met, the rest offline: close", quorum: 2, st: state{reported: []string{"a", "b"}, offline: []string{"c"}}, want: closeRound},
		{name: "quorum met, the rest failed: close", quorum: 2, st: state{reported: []string{"a", "b"}, failed: []string{"c"}}, want: closeRound},
		{name: "quorum met, one still training: wait", quorum: 2, st: state{reported: []string{"a", "b"}}, want: keepWaiting},
		{name: "quorum met at the deadline: close", quorum: 2, st: state{reported: []string{"a", "b"}}, deadline: true, want: closeRound},
		{name: "below quorum at the deadline: fail", quorum: 2, st: state{reported: []string{"a"}}, deadline: true, want: failJob, reason: "timed out"},
		{name: "offline is not out: wait", quorum: 2, st: state{offline: []string{"b", "c"}}, want: keepWaiting},
		{name: "two failed of three, quorum 2: fail at once", quorum: 2, st: state{failed: []string{"b", "c"}}, want: failJob, reason: "cannot reach"},
		{name: "a refusing site skipped under a quorum", quorum: 2, st: state{reported: []string{"a", "b"}, refused: []string{"c"}}, want: closeRound},
		{name: "a refusing site with the default quorum fails", st: state{reported: []string{"a", "b"}, refused: []string{"c"}}, want: failJob, reason: "site c refused"},
		{name: "sampled round: only its members count", perRound: 2, sampled: []string{"a", "c"}, st: state{reported: []string{"a", "c"}}, want: closeRound},
		{name: "sampled round: waits for a member", perRound: 2, sampled: []string{"a", "c"}, st: state{reported: []string{"a", "b"}}, want: keepWaiting},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &job.Manifest{Rounds: 3, Envoys: []string{"a", "b", "c"}, MinEnvoysPerRound: tt.quorum, ParticipantsPerRound: tt.perRound}
			exp := newExperiment("job", m, []string{"a", "b", "c"}, 0, nil)
			exp.sampled = nameSet(tt.sampled)
			for _, p := range tt.st.reported {
				exp.reported[p] = true
			}
			for _, p := range tt.st.offline {
				exp.missed[p] = miss{kind: missOffline, reason: p + " went offline"}
			}
			for _, p := range tt.st.failed {
				exp.missed[p] = miss{kind: missFailed, reason: p + " failed"}
			}
			for _, p := range tt.st.refused {
				exp.refused[p] = true
			}
			got, reason := exp.verdictLocked(tt.deadline)
			if got != tt.want || !strings.Contains(reason, tt.reason) {
				t.Fatalf("verdict %v %q, want %v with %q", got, reason, tt.want, tt.reason)
			}
		})
	}
}

// TestSampling: a round's sample has participants_per_round envoys, online
// ones first, and the same seed over the same envoys picks the same sample.
func TestSampling(t *testing.T) {
	ctx := context.Background()
	d := mustNew(t, testCfg(t, newFakeClock()))
	names := []string{"e0", "e1", "e2", "e3", "e4", "e5", "e6", "e7"}
	for _, n := range names[:6] { // e6 and e7 never registered: offline
		if _, err := d.RegisterEnvoy(ctx, store.Envoy{Name: n, SampleShape: []string{"28", "28"}, TargetShape: []string{"1"}}); err != nil {
			t.Fatal(err)
		}
	}
	seed := int64(42)
	m := &job.Manifest{Rounds: 5, Envoys: names, ParticipantsPerRound: 0.5, SamplingSeed: &seed}
	exp := newExperiment("job-a", m, names, 0, nil)
	var picks [][]string
	for round := range 5 {
		s := d.sample(exp, round)
		if len(s) != 4 || !slices.IsSorted(s) {
			t.Fatalf("round %d: sample %v, want 4 names sorted", round, s)
		}
		if slices.Contains(s, "e6") || slices.Contains(s, "e7") {
			t.Fatalf("round %d: sample %v took an offline envoy while 6 are online", round, s)
		}
		if again := d.sample(exp, round); !slices.Equal(again, s) {
			t.Fatalf("round %d: %v, then %v with the same seed", round, s, again)
		}
		picks = append(picks, s)
	}
	if slices.EqualFunc(picks[1:], picks[:len(picks)-1], slices.Equal) {
		t.Fatalf("every round sampled the same envoys: %v", picks[0])
	}
	other := newExperiment("job-b", &job.Manifest{Rounds: 5, Envoys: names, ParticipantsPerRound: 0.5}, names, 0, nil)
	differ := false
	for round := range 5 {
		differ = differ || !slices.Equal(d.sample(other, round), picks[round])
	}
	if !differ {
		t.Fatal("a job with another seed sampled exactly the same envoys every round")
	}
	exp.refused["e0"], exp.refused["e1"], exp.refused["e2"] = true, true, true
	for round := range 5 {
		if s := d.sample(exp, round); slices.ContainsFunc(s, func(n string) bool { return exp.refused[n] }) {
			t.Fatalf("round %d: sample %v holds a site that refused the job", round, s)
		}
	}
	if got := d.sample(newExperiment("all", &job.Manifest{Rounds: 1, Envoys: names}, names, 0, nil), 0); got != nil {
		t.Fatalf("no participants_per_round: sample %v, want nil (everyone)", got)
	}
}
