package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// TestFailoverBetweenDirectors runs two directors, as two replicas a site
// reaches without a load balancer (on data dirs of their own: this tests
// the clients' failover, not replication), and an envoy and fladmin given
// both addresses. The envoy registers with the first only; killed with
// SIGKILL while the envoy runs its job, the first leaves the envoy to
// register with the second and run the second's job; fladmin, its first
// address dead, drives the second.
func TestFailoverBetweenDirectors(t *testing.T) {
	d1 := startDirectorAdmin(t, t.TempDir(), fastDirector...)
	d2 := startDirectorAdmin(t, t.TempDir(), fastDirector...)
	e := start(t, "envoy", "start", "--allow-root", "--name", "site-a", "--director", d1.grpc+","+d2.grpc,
		"--shard-dir", makeShard(t, 1, 10), "--samples", "10", "--work-dir", t.TempDir(), "--kill-grace", "1s", "--log-level", "debug")
	waitOnline(t, d1, "site-a")
	if envoys := listEnvoys(t, d2); len(envoys) != 0 {
		t.Fatalf("the second director knows %+v while the first serves", envoys)
	}

	// Mid-run: the envoy trains for a job of the first director's.
	submitJob(t, d1, trainJob(t, "on-the-first", `"min_envoys": 1`, 3, "slow", "1m"))
	e.WaitRecord(t, time.Minute, "training")
	d1.proc.Kill()

	both := d1.admin + "," + d2.admin
	eventually(t, time.Minute, "site-a online at the second director", func() bool {
		var out []envoyState
		r := fladmin(t, both, "-o", "json", "list-envoys")
		if r.code != 0 {
			t.Fatalf("fladmin --addr %s list-envoys: exit %d, %s", both, r.code, r.stderr)
		}
		return json.Unmarshal([]byte(r.stdout), &out) == nil && len(out) == 1 && out[0].Name == "site-a" && out[0].Online
	})
	if r := fladmin(t, both, "status"); r.code != 0 || !strings.Contains(r.stdout, " at "+d2.admin+",") {
		t.Fatalf("fladmin status: exit %d, stdout %q, stderr %q; want the second director's", r.code, r.stdout, r.stderr)
	}

	out := mustFladmin(t, both, "submit-job", trainJob(t, "on-the-second", `"min_envoys": 1`, 1, "ok", "1m"))
	id := strings.TrimSpace(strings.TrimPrefix(out, "Submitted job "))
	if r := fladmin(t, both, "wait-job", id, "--wait-timeout", "60s"); r.code != 0 || !strings.Contains(r.stdout, "finished") {
		t.Fatalf("wait-job on the second director: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if j := showJob(t, d2, id); j.Status != "finished" {
		t.Fatalf("the second director's job: %+v", j)
	}
}
