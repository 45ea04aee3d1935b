package e2e

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedplane/fedplane/api/directorpb"
)

// TestDirectorRegistryOverTCP registers envoys with a real director process,
// heartbeats, restarts the director, and finds the registry intact.
func TestDirectorRegistryOverTCP(t *testing.T) {
	ctx := context.Background()
	shape := []string{"--sample-shape", "28,28", "--target-shape", "1", "--health-check-period", "1s"}
	d := startDirectorAdmin(t, t.TempDir(), shape...)
	c := d.client

	for _, name := range []string{"site-a", "site-b"} {
		resp, err := c.UpdateShardInfo(ctx, &directorpb.UpdateShardInfoRequest{ShardInfo: &directorpb.ShardInfo{
			NodeInfo: &directorpb.NodeInfo{Name: name}, NSamples: 42, SampleShape: []string{"28", "28"}, TargetShape: []string{"1"},
		}})
		if err != nil || !resp.GetAccepted() {
			t.Fatalf("register %s: %v %v", name, resp, err)
		}
	}
	refused, err := c.UpdateShardInfo(ctx, &directorpb.UpdateShardInfoRequest{ShardInfo: &directorpb.ShardInfo{
		NodeInfo: &directorpb.NodeInfo{Name: "site-c"}, SampleShape: []string{"3"}, TargetShape: []string{"1"},
	}})
	if err != nil || refused.GetAccepted() {
		t.Fatalf("wrong shape: got %v %v, want accepted=false", refused, err)
	}
	hb, err := c.UpdateEnvoyStatus(ctx, &directorpb.UpdateEnvoyStatusRequest{Name: "site-a"})
	if err != nil {
		t.Fatal(err)
	}
	if got := hb.GetHealthCheckPeriod().AsDuration(); got != time.Second {
		t.Fatalf("period: got %v, want 1s", got)
	}
	if _, err := c.UpdateEnvoyStatus(ctx, &directorpb.UpdateEnvoyStatusRequest{Name: "site-c"}); status.Code(err) != codes.NotFound {
		t.Fatalf("heartbeat of refused envoy: got %v, want NotFound", err)
	}

	took, err := d.proc.Stop(t, 5*time.Second)
	if err != nil {
		t.Fatalf("director exit after SIGTERM: %v (want exit 0)", err)
	}
	t.Logf("director stopped in %v", took)

	c = restartDirector(t, d, shape...).client
	envoys, err := c.GetEnvoys(ctx, &directorpb.GetEnvoysRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range envoys.GetEnvoyInfos() {
		names = append(names, e.GetShardInfo().GetNodeInfo().GetName())
		if e.GetShardInfo().GetNSamples() != 42 {
			t.Errorf("%s n_samples after restart: got %d, want 42", names[len(names)-1], e.GetShardInfo().GetNSamples())
		}
	}
	if len(names) != 2 || names[0] != "site-a" || names[1] != "site-b" {
		t.Fatalf("envoys after restart: got %v, want [site-a site-b]", names)
	}
	// Known after the restart: a heartbeat is accepted without re-registering.
	if _, err := c.UpdateEnvoyStatus(ctx, &directorpb.UpdateEnvoyStatusRequest{Name: "site-b"}); err != nil {
		t.Fatalf("heartbeat after restart: %v", err)
	}
}

// TestDirectorRefusesBadFlags checks that bad flags exit 2 with a message
// naming the flag, and that a stop with an idle client is clean.
func TestDirectorRefusesBadFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"bad log level", []string{"serve", "--log-level", "loud"}, "--log-level"},
		{"bad duration", []string{"serve", "--health-check-period", "soon"}, "health-check-period"},
		{"unknown flag", []string{"serve", "--nope"}, "--nope"},
		{"negative period", []string{"serve", "--health-check-period", "-1s"}, "health-check-period"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := start(t, "director", append(tt.args, "--data-dir", t.TempDir())...)
			<-p.Done
			if code := p.Cmd.ProcessState.ExitCode(); code != 2 {
				t.Fatalf("exit code: got %d, want 2; output:\n%s", code, p.Log)
			}
			if !contains(p.Log.String(), tt.want) {
				t.Fatalf("output %q does not name %q", p.Log, tt.want)
			}
		})
	}
}
