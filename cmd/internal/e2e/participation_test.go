package e2e

import (
	"encoding/json"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fedplane/fedplane/api"
)

// TestPausedSiteRejoins is the flaky site of issue 17: in a job with
// min_envoys_per_round 2 of 3, one envoy is paused (SIGSTOP) for longer
// than --offline-after. The rounds close without it at their quorum, the
// job does not fail, and once resumed the envoy rejoins and reports a
// later round; the job finishes.
func TestPausedSiteRejoins(t *testing.T) {
	d := startDirectorAdmin(t, t.TempDir(), fastDirector...)
	startEnvoy(t, d, "site-a", makeShard(t, 1, 10))
	startEnvoy(t, d, "site-b", makeShard(t, 2, 10))
	c := startEnvoy(t, d, "site-c", makeShard(t, 3, 10))
	waitOnline(t, d, "site-a", "site-b", "site-c")

	c.Cmd.Process.Signal(syscall.SIGSTOP)
	id := submitJob(t, d, trainJob(t, "flaky", `"min_envoys": 3, "min_envoys_per_round": 2`, 12, "slow", "1m"))
	eventually(t, 20*time.Second, "site-c to go offline and miss a round", func() bool {
		for _, e := range showJob(t, d, id).Envoys {
			if e.Name == "site-c" && e.Status == string(api.EnvoyMissed) && strings.Contains(e.Reason, "went offline") {
				return true
			}
		}
		return false
	})
	// It stays away until a round has closed without it, at its quorum.
	eventually(t, 20*time.Second, "a round to close with 2 of 3 reports", func() bool {
		return contains(mustFladmin(t, d.admin, "events", "--job", id), "aggregated from 2 reports")
	})
	c.Cmd.Process.Signal(syscall.SIGCONT)
	if r := fladmin(t, d.admin, "wait-job", id, "--wait-timeout", "90s"); r.code != 0 {
		t.Fatalf("wait-job: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	var ms []api.Metric
	if err := json.Unmarshal([]byte(mustFladmin(t, d.admin, "metrics", id, "-o", "json")), &ms); err != nil {
		t.Fatal(err)
	}
	first, last := -1, -1
	for _, m := range ms {
		if m.Origin == "site-c" {
			if first < 0 {
				first = m.Round
			}
			last = m.Round
		}
	}
	if first < 1 || last < first {
		t.Fatalf("site-c reported rounds %d..%d: want it to miss round 0 and rejoin a later one", first, last)
	}
}

// TestFailingSiteSkippedAtQuorum: a site whose training fails every round
// misses each round; with min_envoys_per_round 1 of 2 the job finishes on
// the other site's reports.
func TestFailingSiteSkippedAtQuorum(t *testing.T) {
	d := startDirectorAdmin(t, t.TempDir(), fastDirector...)
	startEnvoy(t, d, "site-a", makeShard(t, 1, 10))
	waitOnline(t, d, "site-a")
	// site-b's train.py fails: its shard has no constant file.
	startEnvoy(t, d, "site-b", t.TempDir())
	waitOnline(t, d, "site-b")
	id := submitJob(t, d, trainJob(t, "skip", `"envoys": ["site-a", "site-b"], "min_envoys_per_round": 1, "round_timeout": "30s"`, 2, "ok", "1m"))
	if r := fladmin(t, d.admin, "wait-job", id, "--wait-timeout", "90s"); r.code != 0 {
		t.Fatalf("wait-job: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
}

// TestSampledRounds: participants_per_round 2 of 3 trains each round on
// two envoys; show-job states the rule with its seed and defaults.
func TestSampledRounds(t *testing.T) {
	d := startDirectorAdmin(t, t.TempDir(), fastDirector...)
	for _, n := range []string{"site-a", "site-b", "site-c"} {
		startEnvoy(t, d, n, makeShard(t, 1, 10))
	}
	waitOnline(t, d, "site-a", "site-b", "site-c")
	id := submitJob(t, d, trainJob(t, "sampled", `"min_envoys": 3, "participants_per_round": 2, "sampling_seed": 7`, 3, "ok", "1m"))
	if r := fladmin(t, d.admin, "wait-job", id, "--wait-timeout", "60s"); r.code != 0 {
		t.Fatalf("wait-job: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	if n := strings.Count(mustFladmin(t, d.admin, "events", "--job", id), "aggregated from 2 reports"); n != 3 {
		t.Fatalf("%d rounds aggregated from 2 reports, want 3", n)
	}
	var j api.Job
	if err := json.Unmarshal([]byte(mustFladmin(t, d.admin, "show-job", id, "-o", "json")), &j); err != nil {
		t.Fatal(err)
	}
	p := j.Participation
	if p == nil || p.PerRound != 2 || p.Participants != 3 || p.Quorum != 2 || p.SamplingSeed == nil || *p.SamplingSeed != 7 ||
		p.RoundDeadline != "11m0s" || !p.DeadlineIsDefault {
		t.Fatalf("participation %+v", p)
	}
	if out := mustFladmin(t, d.admin, "show-job", id); !strings.Contains(out, "2 of 3 envoys a round (sampled, seed 7); quorum 2; round deadline 11m0s (default: train.timeout + 10m)") {
		t.Fatalf("show-job:\n%s", out)
	}
}
