package server

import (
	"context"
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/directorpb"
)

// TestRemoveEnvoy forgets an envoy: refused while it runs a job, then gone
// from the listing and the store, and back once it registers again.
func TestRemoveEnvoy(t *testing.T) {
	ctx := context.Background()
	f := startFed(t, testCfg(t, newFakeClock()))
	f.register(t, "site-a", "site-b")
	id := f.submitJob(t, `{"name": "busy", "envoys": ["site-a"], "rounds": 2, "train": {"command": ["true"]}}`)
	if got := f.waitFor(t, "site-a"); got != id {
		t.Fatalf("site-a's work: got %s, want %s", got, id)
	}
	listed := func() []string {
		resp, err := f.c.dir.GetEnvoys(ctx, &directorpb.GetEnvoysRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range resp.GetEnvoyInfos() {
			names = append(names, e.GetShardInfo().GetNodeInfo().GetName())
		}
		return names
	}

	tests := []struct {
		name       string
		command    string
		wantStatus string
		wantInfo   string
	}{
		{name: "running a job", command: "remove_envoy site-a", wantStatus: adminproto.StatusJobRunning, wantInfo: "abort the job first"},
		{name: "idle", command: "remove_envoy site-b", wantStatus: adminproto.StatusOK},
		{name: "again", command: "remove_envoy site-b", wantStatus: adminproto.StatusInvalidJobID, wantInfo: `"site-b" is not registered`},
		{name: "bad name", command: "remove_envoy ../etc", wantStatus: adminproto.StatusSyntaxError, wantInfo: "envoy name"},
		{name: "no name", command: "remove_envoy", wantStatus: adminproto.StatusSyntaxError, wantInfo: "give one envoy name"},
		{name: "two names", command: "remove_envoy a b", wantStatus: adminproto.StatusSyntaxError, wantInfo: "give one envoy name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reply := do(t, f.admin, tt.command)
			if reply.Status() != tt.wantStatus || !strings.Contains(reply.Info(), tt.wantInfo) {
				t.Fatalf("got %s %q, want %s containing %q", reply.Status(), reply.Info(), tt.wantStatus, tt.wantInfo)
			}
		})
	}
	if got := listed(); len(got) != 1 || got[0] != "site-a" {
		t.Fatalf("envoys after removing site-b: got %v, want [site-a]", got)
	}
	if _, err := f.db.GetEnvoy(ctx, "site-b"); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("site-b in the store: got %v, want not found", err)
	}
	// A removed envoy that is still up hears at its next heartbeat that it
	// is unknown, registers again and is back.
	if _, err := f.c.dir.UpdateEnvoyStatus(ctx, &directorpb.UpdateEnvoyStatusRequest{Name: "site-b"}); status.Code(err) != codes.NotFound {
		t.Fatalf("heartbeat of the removed envoy: got %v, want NotFound", err)
	}
	f.register(t, "site-b")
	if got := listed(); len(got) != 2 {
		t.Fatalf("envoys after site-b registered again: got %v", got)
	}
	// Once its job has ended, site-a may be removed too.
	if reply := do(t, f.admin, "abort_job "+id); reply.Status() != adminproto.StatusOK {
		t.Fatalf("abort: %s %s", reply.Status(), reply.Info())
	}
	if reply := do(t, f.admin, "remove_envoy site-a"); reply.Status() != adminproto.StatusOK || reply.Meta[api.MetaEnvoy] != "site-a" {
		t.Fatalf("remove site-a after its job ended: %s %s %v", reply.Status(), reply.Info(), reply.Meta)
	}
}
