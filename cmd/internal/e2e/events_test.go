package e2e

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/fedplane/fedplane/api"
)

// decodeEvents reads fladmin events' output: one JSON object a line with
// --follow, one JSON list without.
func decodeEvents(tb testing.TB, out string, list bool) []api.Event {
	tb.Helper()
	var events []api.Event
	if list {
		if err := json.Unmarshal([]byte(out), &events); err != nil {
			tb.Fatalf("events -o json: %v\n%s", err, out)
		}
		return events
	}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if line == "" {
			continue
		}
		var e api.Event
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			tb.Fatalf("events --follow line %q: %v", line, err)
		}
		events = append(events, e)
	}
	return events
}

// kinds lists the kinds of events, of job when set, in order.
func kinds(events []api.Event, job string) []string {
	var out []string
	for _, e := range events {
		if job == "" || e.Job == job {
			out = append(out, string(e.Kind))
		}
	}
	return out
}

// TestEventsAndAudit runs a job on two envoys with a follower of the event
// stream started first: it must see the envoys register, the job's life
// with each round's aggregated metrics as it happens, and an envoy going
// offline; a follower of the job alone stops at its end. The audit trail
// has every admin command with what it named and how it ended.
func TestEventsAndAudit(t *testing.T) {
	d := startDirectorAdmin(t, t.TempDir(), fastDirector...)
	follower := start(t, "fladmin", "--addr", d.admin, "events", "--follow", "-o", "json")
	a := startEnvoy(t, d, "site-a", makeShard(t, 1, 10))
	startEnvoy(t, d, "site-b", makeShard(t, 2, 30))
	waitOnline(t, d, "site-a", "site-b")

	id := submitJob(t, d, trainJob(t, "events", `"min_envoys": 2`, 2, "ok", "1m"))
	if r := fladmin(t, d.admin, "wait-job", id, "--wait-timeout", "60s"); r.code != 0 {
		t.Fatalf("wait-job: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	// Its own job's end ends a follower of one job.
	r := fladmin(t, d.admin, "events", "--job", id[:8], "--follow", "-o", "json")
	if r.code != 0 {
		t.Fatalf("events --job --follow: exit %d: %s", r.code, r.stderr)
	}
	jobEvents := decodeEvents(t, r.stdout, false)
	want := "job.submitted job.started job.round job.round job.finished"
	if got := strings.Join(kinds(jobEvents, ""), " "); got != want {
		t.Fatalf("events of job %s: %s, want %s", id, got, want)
	}
	for i, e := range jobEvents[2:4] {
		// (1×10 + 2×30) / 40: the sample-weighted mean of the constants.
		if e.Round != i+1 || e.Metrics["train/constant"] != 1.75 {
			t.Fatalf("round event %d: %+v, want round %d with train/constant 1.75", i, e, i+1)
		}
	}

	a.Kill()
	eventually(t, 20*time.Second, "the follower to see site-a go offline", func() bool {
		return contains(follower.Log.String(), `"envoy.offline"`)
	})
	follower.Kill()
	all := decodeEvents(t, follower.Log.String(), false)
	got := strings.Join(kinds(all, ""), " ")
	for _, w := range []string{"envoy.registered", "job.submitted job.started job.round job.round job.finished", "envoy.offline"} {
		if !strings.Contains(got, w) {
			t.Fatalf("the follower saw %s; want %s among them", got, w)
		}
	}
	for i := 1; i < len(all); i++ {
		if all[i].Seq <= all[i-1].Seq {
			t.Fatalf("sequence numbers out of order: %d after %d", all[i].Seq, all[i-1].Seq)
		}
	}
	// The history, without --follow, as a list and as a table.
	history := decodeEvents(t, mustFladmin(t, d.admin, "events", "-o", "json"), true)
	if len(history) < len(all) {
		t.Fatalf("history holds %d events, the follower saw %d", len(history), len(all))
	}
	table := mustFladmin(t, d.admin, "events", "--after", "1")
	if !strings.HasPrefix(table, "SEQ\tTIME\tKIND") || strings.Contains(table, "\n1\t") || !strings.Contains(table, "train/constant=1.7500") {
		t.Fatalf("events table:\n%s", table)
	}

	// A refused command is in the trail as well as the ones that worked.
	if r := fladmin(t, d.admin, "abort-job", id); r.code == 0 {
		t.Fatalf("abort of a finished job: exit 0")
	}
	var trail []api.AuditRecord
	if err := json.Unmarshal([]byte(mustFladmin(t, d.admin, "audit", "-o", "json", "--since", "1h")), &trail); err != nil {
		t.Fatal(err)
	}
	var submitted, refused bool
	for _, a := range trail {
		if a.Channel != api.AuditAdmin || a.Caller == "" {
			t.Fatalf("audit record %+v: want the admin channel and a caller", a)
		}
		submitted = submitted || (a.Action == api.CmdSubmitJob && a.Outcome == "ok" && strings.Contains(a.Target, id))
		refused = refused || (a.Action == api.CmdAbortJob && a.Outcome != "ok" && strings.Contains(a.Target, id) && a.Detail != "")
	}
	if !submitted || !refused {
		t.Fatalf("audit trail lacks the submission (%v) or the refused abort (%v):\n%+v", submitted, refused, trail)
	}
}
