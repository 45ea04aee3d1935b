package envoy

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/directorpb"
)

// fastPeriod is the health check period the fake director hands out.
var fastPeriod = durationpb.New(50 * time.Millisecond)

func TestRegisterRefused(t *testing.T) {
	tests := []struct {
		name    string
		reason  string
		wantErr string
	}{
		{name: "with reason", reason: "sample shape [28 28] differs from the federation's [32 32]",
			wantErr: "director refused the shard: sample shape [28 28] differs from the federation's [32 32]"},
		{name: "without reason", wantErr: "director refused the shard"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := &fakeDirector{}
			var got *directorpb.ShardInfo
			f.updateShardInfo = func(ctx context.Context, req *directorpb.UpdateShardInfoRequest) (*directorpb.UpdateShardInfoResponse, error) {
				got = req.GetShardInfo()
				if tt.reason != "" {
					grpc.SetHeader(ctx, metadata.Pairs(api.MDReason, tt.reason))
				}
				return &directorpb.UpdateShardInfoResponse{Accepted: false}, nil
			}
			e := mustEnvoy(t, f, 600)
			err := e.Run(context.Background())
			if !errors.Is(err, ErrRefused) || err.Error() != tt.wantErr {
				t.Fatalf("Run = %v, want %q wrapping ErrRefused", err, tt.wantErr)
			}
			if got.GetNodeInfo().GetName() != "site-1" || got.GetNSamples() != 600 ||
				!slices.Equal(got.GetSampleShape(), []string{"28", "28"}) || !slices.Equal(got.GetTargetShape(), []string{"1"}) {
				t.Errorf("shard info sent: %v", got)
			}
			if n := f.called("UpdateEnvoyStatus"); n != 0 {
				t.Errorf("a refused envoy sent %d heartbeats", n)
			}
		})
	}
}

func TestRegisterInvalidArgument(t *testing.T) {
	f := &fakeDirector{updateShardInfo: func(context.Context, *directorpb.UpdateShardInfoRequest) (*directorpb.UpdateShardInfoResponse, error) {
		return nil, status.Error(codes.InvalidArgument, "node_info.name is bad")
	}}
	e := mustEnvoy(t, f, 1)
	err := e.Run(context.Background())
	if status.Code(err) != codes.InvalidArgument || errors.Is(err, ErrRefused) {
		t.Fatalf("Run = %v, want InvalidArgument", err)
	}
}

func TestRegisterRetriesUnavailable(t *testing.T) {
	f := &fakeDirector{}
	f.updateShardInfo = func(ctx context.Context, req *directorpb.UpdateShardInfoRequest) (*directorpb.UpdateShardInfoResponse, error) {
		if f.called("UpdateShardInfo") <= 2 {
			return nil, status.Error(codes.Unavailable, "not yet")
		}
		return &directorpb.UpdateShardInfoResponse{Accepted: true}, nil
	}
	f.updateEnvoyStatus = func(context.Context, *directorpb.UpdateEnvoyStatusRequest) (*directorpb.UpdateEnvoyStatusResponse, error) {
		return &directorpb.UpdateEnvoyStatusResponse{HealthCheckPeriod: fastPeriod}, nil
	}
	e := mustEnvoy(t, f, 1)
	stop, _ := startRun(t, e)
	eventually(t, "heartbeats after registering", func() bool { return f.called("UpdateEnvoyStatus") >= 3 })
	if err := stop(); err != nil {
		t.Fatalf("Run = %v, want nil after cancel", err)
	}
	if n := f.called("UpdateShardInfo"); n != 3 {
		t.Errorf("UpdateShardInfo called %d times, want 3", n)
	}
}

func TestHeartbeatNotFoundRegistersAgain(t *testing.T) {
	f := &fakeDirector{}
	var (
		mu       sync.Mutex
		forget   = true // the director "restarted" and forgot the envoy
		statuses []bool
	)
	f.updateShardInfo = func(context.Context, *directorpb.UpdateShardInfoRequest) (*directorpb.UpdateShardInfoResponse, error) {
		mu.Lock()
		defer mu.Unlock()
		if f.called("UpdateShardInfo") > 1 {
			forget = false
		}
		return &directorpb.UpdateShardInfoResponse{Accepted: true}, nil
	}
	f.updateEnvoyStatus = func(_ context.Context, req *directorpb.UpdateEnvoyStatusRequest) (*directorpb.UpdateEnvoyStatusResponse, error) {
		mu.Lock()
		defer mu.Unlock()
		if req.GetName() != "site-1" {
			return nil, status.Error(codes.InvalidArgument, "wrong name")
		}
		statuses = append(statuses, req.GetIsExperimentRunning())
		if forget {
			return nil, status.Error(codes.NotFound, "unknown envoy")
		}
		return &directorpb.UpdateEnvoyStatusResponse{HealthCheckPeriod: fastPeriod}, nil
	}
	e := mustEnvoy(t, f, 1)
	stop, _ := startRun(t, e)
	eventually(t, "heartbeats after registering again", func() bool {
		return f.called("UpdateShardInfo") == 2 && f.called("UpdateEnvoyStatus") >= 5
	})
	if err := stop(); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	if n := f.called("UpdateShardInfo"); n != 2 {
		t.Errorf("UpdateShardInfo called %d times, want 2 (start, and after NotFound)", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if slices.Contains(statuses, true) {
		t.Errorf("is_experiment_running sent as true by an idle envoy: %v", statuses)
	}
}

func TestHeartbeatKeepsGoing(t *testing.T) {
	codesSent := []codes.Code{codes.OK, codes.Unavailable, codes.Internal, codes.DeadlineExceeded, codes.PermissionDenied, codes.OK}
	f := &fakeDirector{}
	f.updateEnvoyStatus = func(context.Context, *directorpb.UpdateEnvoyStatusRequest) (*directorpb.UpdateEnvoyStatusResponse, error) {
		n := f.called("UpdateEnvoyStatus")
		if n <= len(codesSent) && codesSent[n-1] != codes.OK {
			return nil, status.Error(codesSent[n-1], "trouble")
		}
		return &directorpb.UpdateEnvoyStatusResponse{HealthCheckPeriod: fastPeriod}, nil
	}
	e := mustEnvoy(t, f, 1)
	stop, _ := startRun(t, e)
	eventually(t, "heartbeats past the errors", func() bool { return f.called("UpdateEnvoyStatus") >= len(codesSent)+3 })
	if err := stop(); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	if n := f.called("UpdateShardInfo"); n != 1 {
		t.Errorf("UpdateShardInfo called %d times, want 1", n)
	}
}

func TestHeartbeatRefusedOnRegisteringAgain(t *testing.T) {
	f := &fakeDirector{}
	f.updateShardInfo = func(ctx context.Context, _ *directorpb.UpdateShardInfoRequest) (*directorpb.UpdateShardInfoResponse, error) {
		if f.called("UpdateShardInfo") == 1 {
			return &directorpb.UpdateShardInfoResponse{Accepted: true}, nil
		}
		grpc.SetHeader(ctx, metadata.Pairs(api.MDReason, "target shape [1] differs from the federation's [10]"))
		return &directorpb.UpdateShardInfoResponse{Accepted: false}, nil
	}
	f.updateEnvoyStatus = func(context.Context, *directorpb.UpdateEnvoyStatusRequest) (*directorpb.UpdateEnvoyStatusResponse, error) {
		return nil, status.Error(codes.NotFound, "unknown envoy")
	}
	e := mustEnvoy(t, f, 1)
	stop, done := startRun(t, e)
	select {
	case <-done:
		if err := stop(); !errors.Is(err, ErrRefused) {
			t.Fatalf("Run = %v, want ErrRefused", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return after the director refused the shard")
	}
}
