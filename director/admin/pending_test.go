package admin

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/store"
)

// TestPendingJobSaysWhy: a pending job's reason names what it waits for,
// judged when it is asked: too few free envoys, or named envoys offline.
func TestPendingJobSaysWhy(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	d := mustNew(t, testCfg(t, clock))
	for _, name := range []string{"site-a", "site-b"} {
		if _, err := d.RegisterEnvoy(ctx, store.Envoy{Name: name, SampleShape: []string{"28", "28"}, TargetShape: []string{"1"}}); err != nil {
			t.Fatal(err)
		}
	}
	c, _ := mustServeAdmin(t, d, Config{})
	reasonOf := func(manifest string) string {
		t.Helper()
		reply := submit(t, c, zipOf(t, writeJobDir(t, manifest)))
		id, _ := reply.Meta[api.MetaJobID].(string)
		if id == "" {
			t.Fatalf("submit: %s %s", reply.Status(), reply.Info())
		}
		e, err := d.FindJob(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return d.JobInfo(e, false).Reason
	}
	if got, want := reasonOf(`{"name": "three", "min_envoys": 3, "rounds": 1, "train": {"command": ["true"]}}`),
		"needs 3 envoys, 2 free of 2 online: site-a, site-b; only 2 registered"; got != want {
		t.Errorf("min_envoys job: %q, want %q", got, want)
	}
	if got := reasonOf(`{"name": "two", "min_envoys": 2, "rounds": 1, "train": {"command": ["true"]}}`); got != "" {
		t.Errorf("a job that can start: %q, want no reason", got)
	}
	clock.Add(time.Hour) // both go offline
	if got, want := reasonOf(`{"name": "named", "envoys": ["site-b", "site-a"], "rounds": 1, "train": {"command": ["true"]}}`),
		"waits for site-b (offline), site-a (offline)"; got != want {
		t.Errorf("named envoys: %q, want %q", got, want)
	}
}

// TestSubmitJobThatCannotStart: a job asking for more envoys than have
// registered is taken with a warning, or refused when the submitter says
// not to wait (fladmin submit-job --wait-for-envoys=false).
func TestSubmitJobThatCannotStart(t *testing.T) {
	ctx := context.Background()
	d := mustNew(t, testCfg(t, newFakeClock()))
	if _, err := d.RegisterEnvoy(ctx, store.Envoy{Name: "site-a", SampleShape: []string{"28", "28"}, TargetShape: []string{"1"}}); err != nil {
		t.Fatal(err)
	}
	c, _ := mustServeAdmin(t, d, Config{})
	body := zipOf(t, writeJobDir(t, `{"name": "three", "min_envoys": 3, "rounds": 1, "train": {"command": ["true"]}}`))
	upload := func(meta map[string]any) *adminproto.Message {
		t.Helper()
		req := adminproto.NewRequest(api.CmdSubmitJob)
		req.Meta = meta
		reply, err := c.Upload(ctx, req, uint64(len(body)), bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		return reply
	}
	reply := upload(nil)
	if w, _ := reply.Meta[api.MetaWarning].(string); reply.Status() != adminproto.StatusOK || !strings.Contains(w, "asks for 3 envoys (min_envoys) and only 1 have registered") {
		t.Fatalf("waiting submit: %s %q, warning %q", reply.Status(), reply.Info(), w)
	}
	reply = upload(map[string]any{api.MetaWaitForEnvoys: false})
	if reply.Status() != adminproto.StatusInvalidJobDef || !strings.Contains(reply.Info(), "cannot start now") {
		t.Fatalf("no-wait submit: %s %q", reply.Status(), reply.Info())
	}
	reply = upload(map[string]any{api.MetaWaitForEnvoys: true})
	if reply.Status() != adminproto.StatusOK {
		t.Fatalf("explicit wait: %s %q", reply.Status(), reply.Info())
	}
}
