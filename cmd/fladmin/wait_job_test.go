package main

import (
	"regexp"
	"strings"
	"testing"

	"github.com/fedplane/fedplane/adminproto"
)

// TestWaitJobPrintsChanges: wait-job prints a line per change of state,
// round or reason, once each, and then the end. Every reply of the fake
// director carries the job and an empty page of events, for wait-job's
// get_job_meta and the get_events it waits on after each.
func TestWaitJobPrintsChanges(t *testing.T) {
	job := func(status string, done int, reason string) *adminproto.Message {
		return ok(map[string]any{"job": map[string]any{"job_id": "0b5a6a7e-1111", "status": status, "rounds": 2, "roundsDone": done, "reason": reason},
			"events": []any{}, "last_seq": 7})
	}
	var seq [][]byte
	for i, m := range []*adminproto.Message{
		job("pending", 0, ""), // the first get_events
		job("pending", 0, "needs 2 envoys, 1 free of 1 online: site-a"),
		job("pending", 0, "needs 2 envoys, 1 free of 1 online: site-a"),
		job("in_progress", 0, ""),
		job("in_progress", 1, ""),
		job("in_progress", 1, ""),
		job("finished", 2, ""),
	} {
		b, err := adminproto.EncodeMessage(m)
		if err != nil {
			t.Fatal(err)
		}
		seq = append(seq, b)
		if i > 0 {
			seq = append(seq, b) // the get_events after this state
		}
	}
	srv := startFakeAdmin(t, job("finished", 2, ""))
	srv.mu.Lock()
	srv.seq = seq
	srv.mu.Unlock()
	stdout, stderr, code := runFladmin(t, srv.addr, "wait-job", "0b5a6a7e", "--interval", "10ms")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	lines := regexp.MustCompile(`(?m)^\d\d:\d\d:\d\d  `).ReplaceAllString(stdout, "")
	want := "pending: needs 2 envoys, 1 free of 1 online: site-a\n" +
		"in_progress, round 0 of 2 done\n" +
		"in_progress, round 1 of 2 done\n" +
		"Job 0b5a6a7e-1111 finished\n"
	if lines != want {
		t.Fatalf("got\n%s\nwant\n%s", lines, want)
	}
	if strings.Count(stdout, "\n") != 4 {
		t.Fatalf("lines: %q", stdout)
	}
}
