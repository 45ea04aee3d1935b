package e2e

import (
	"encoding/json"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/cmd/internal/proctest"
	"github.com/fedplane/fedplane/store/storetest"
)

// replica is one `director serve` of several on one PostgreSQL database.
type replica struct {
	proc        *proc
	grpc, admin string
}

// freeAddr is a loopback address with a port free a moment ago: replicas
// name each other's ports, so they are chosen before any replica starts.
func freeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", anyPort)
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// startReplicas starts n directors on the database dsn and the blob store
// blobs, and returns them once each listens.
func startReplicas(t *testing.T, n int, dsn, blobs string, extra ...string) []*replica {
	t.Helper()
	rs := make([]*replica, n)
	for i := range rs {
		r := &replica{grpc: freeAddr(t), admin: freeAddr(t)}
		args := append([]string{"serve", "--data-dir", t.TempDir(), "--database", dsn, "--blob-store", blobs,
			"--grpc-listen", r.grpc, "--admin-listen", r.admin, "--log-level", "debug"}, extra...)
		r.proc = start(t, "director", args...)
		r.proc.WaitRecord(t, proctest.StartTimeout, "director replica listening")
		rs[i] = r
	}
	return rs
}

// coordinator waits until one of rs (none of skip) logs that it took the
// coordinator lease, and returns it.
func coordinator(t *testing.T, rs []*replica, skip ...*replica) *replica {
	t.Helper()
	var found *replica
	eventually(t, 60*time.Second, "a replica to take the coordinator lease", func() bool {
		for _, r := range rs {
			if !slices.Contains(skip, r) && strings.Contains(r.proc.Log.String(), "coordinator lease taken") {
				found = r
				return true
			}
		}
		return false
	})
	return found
}

// addrs joins the gRPC or admin addresses of rs, in the order given.
func addrs(rs []*replica, admin bool) string {
	var out []string
	for _, r := range rs {
		if admin {
			out = append(out, r.admin)
		} else {
			out = append(out, r.grpc)
		}
	}
	return strings.Join(out, ",")
}

// aggregatedRounds lists the rounds a replica's log says it aggregated.
func aggregatedRounds(p *proc) []string {
	var out []string
	for _, line := range strings.Split(p.Log.String(), "\n") {
		if rec, ok := proctest.ParseRecord(line); ok && rec["msg"] == "round aggregated" {
			out = append(out, rec["round"])
		}
	}
	return out
}

// TestReplicasSurviveCoordinatorKill runs three directors on one PostgreSQL
// database and one blob store, with envoys spread over them (each given
// every replica's address, in different orders). While the job trains
// round 1 the replica holding the coordinator lease, the owner of the
// running round, is killed with SIGKILL. A standby takes the lease over,
// resumes the round from the database and the blob store, and the job
// finishes with exactly the model of an uninterrupted run; no round is
// aggregated twice (the replicas' logs, and the rounds of the job's
// events); and fladmin on either surviving replica shows the same job.
func TestReplicasSurviveCoordinatorKill(t *testing.T) {
	dsn := storetest.Postgres(t)
	blobs := t.TempDir()
	rs := startReplicas(t, 3, dsn, "file://"+blobs, "--health-check-period", "300ms", "--offline-after", "1500ms", "--lease-ttl", "1s")
	owner := coordinator(t, rs)
	others := slices.DeleteFunc(slices.Clone(rs), func(r *replica) bool { return r == owner })

	shardA := makeShard(t, 1, 10)
	envoyArgs := func(name, shard, director string) []string {
		return []string{"start", "--allow-root", "--name", name, "--director", director, "--shard-dir", shard,
			"--work-dir", t.TempDir(), "--kill-grace", "1s", "--log-level", "debug"}
	}
	// site-a tries a standby first, site-b the owner first.
	start(t, "envoy", envoyArgs("site-a", shardA, addrs([]*replica{others[0], owner, others[1]}, false))...)
	start(t, "envoy", envoyArgs("site-b", makeShard(t, 3, 30), addrs([]*replica{owner, others[1], others[0]}, false))...)
	admins := addrs(rs, true)
	// Listed through a standby: it relays the admin port.
	waitOnline(t, &director{admin: others[1].admin}, "site-a", "site-b")
	// Submitted through a standby: it relays the admin port.
	out := mustFladmin(t, others[0].admin, "submit-job", trainJob(t, "replicas", `"min_envoys": 2`, 3, "slow", "1m"))
	id := strings.TrimSpace(strings.TrimPrefix(out, "Submitted job "))

	eventually(t, 90*time.Second, "round 0 aggregated", func() bool { return roundModelExists(blobs, id, 1) })
	eventually(t, 60*time.Second, "site-a training round 1", func() bool { return trainingRound(shardA) == "1" })
	owner.proc.Kill()
	killed := time.Now()
	next := coordinator(t, others)
	t.Logf("replica %s took over %v after the kill", next.admin, time.Since(killed).Round(time.Millisecond))
	eventually(t, 90*time.Second, "a round aggregated by the new coordinator", func() bool { return len(aggregatedRounds(next.proc)) > 0 })
	t.Logf("it closed round %s %v after the kill (site-a was training it when the coordinator died)", aggregatedRounds(next.proc)[0], time.Since(killed).Round(time.Millisecond))

	if r := fladmin(t, admins, "wait-job", id, "--wait-timeout", "120s"); r.code != 0 {
		t.Fatalf("job after the coordinator's kill: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	expectConstants(t, blobs, id, 3, (1.0*10+3*30)/40)

	// No round twice: by the replicas' own logs, and by the events.
	var all []string
	for _, r := range rs {
		all = append(all, aggregatedRounds(r.proc)...)
	}
	slices.Sort(all)
	if want := []string{"0", "1", "2"}; !slices.Equal(all, want) {
		t.Fatalf("rounds aggregated, all replicas together: %v, want each of %v once", all, want)
	}
	// (The killed replica's last batch of events may be lost, never doubled.)
	ev := mustFladmin(t, next.admin, "events", "--job", id, "-o", "json")
	var events []struct {
		Kind  string `json:"kind"`
		Round int    `json:"round"`
	}
	if err := json.Unmarshal([]byte(ev), &events); err != nil {
		t.Fatalf("events -o json: %v\n%s", err, ev)
	}
	seen := map[int]bool{}
	for _, e := range events {
		if e.Kind == string(api.EventJobRound) {
			if seen[e.Round] {
				t.Fatalf("round event %d recorded twice:\n%s", e.Round, ev)
			}
			seen[e.Round] = true
		}
	}
	if !seen[3] {
		t.Fatalf("no event of the last round, which the replica that took over aggregated:\n%s", ev)
	}

	// Every surviving replica shows the same job.
	var shown []string
	for _, r := range others {
		shown = append(shown, mustFladmin(t, r.admin, "show-job", id, "-o", "json"))
	}
	if shown[0] != shown[1] {
		t.Fatalf("show-job differs between replicas:\n%s\n---\n%s", shown[0], shown[1])
	}
	if !strings.Contains(shown[0], `"finished"`) {
		t.Fatalf("show-job after the run: %s", shown[0])
	}
}
