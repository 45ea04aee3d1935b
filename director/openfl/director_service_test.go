package openfl

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/director"
)

func TestUpdateShardInfo(t *testing.T) {
	clock := newFakeClock()
	c := mustServeBufconn(t, mustNew(t, testCfg(t, clock)))
	ok, sample, target := []string{"28", "28"}, []string{"28", "28"}, []string{"1"}
	tests := []struct {
		name         string
		req          *directorpb.UpdateShardInfoRequest
		wantCode     codes.Code
		wantAccepted bool
		wantMsg      string
	}{
		{name: "accepted", req: shard("site-1", 100, sample, target), wantAccepted: true},
		{name: "update of a known envoy", req: shard("site-1", 200, sample, target), wantAccepted: true},
		{name: "wrong sample shape", req: shard("site-2", 1, []string{"32", "32"}, target)},
		{name: "wrong target shape", req: shard("site-2", 1, ok, []string{"2"})},
		{name: "missing shard info", req: &directorpb.UpdateShardInfoRequest{}, wantCode: codes.InvalidArgument, wantMsg: "shard_info"},
		{name: "empty name", req: shard("", 1, sample, target), wantCode: codes.InvalidArgument, wantMsg: "node_info.name is empty"},
		{name: "bad name", req: shard("../etc", 1, sample, target), wantCode: codes.InvalidArgument, wantMsg: "node_info.name"},
		{name: "long name", req: shard(strings.Repeat("x", 129), 1, sample, target), wantCode: codes.InvalidArgument, wantMsg: "at most 128"},
		{name: "long description", req: withShard(shard("site-3", 1, sample, target), func(si *directorpb.ShardInfo) {
			si.ShardDescription = strings.Repeat("d", director.MaxShardDescription+1)
		}), wantCode: codes.InvalidArgument, wantMsg: "shard_description of 4097 bytes exceeds the cap of 4096"},
		{name: "too many dimensions", req: shard("site-3", 1, make([]string, director.MaxShapeDims+1), target),
			wantCode: codes.InvalidArgument, wantMsg: "sample_shape has 33 dimensions, over the cap of 32"},
		{name: "long dimension", req: shard("site-3", 1, sample, []string{strings.Repeat("9", director.MaxDimLen+1)}),
			wantCode: codes.InvalidArgument, wantMsg: "target_shape[0] of 65 bytes exceeds the cap of 64"},
		{name: "too many devices", req: withShard(shard("site-3", 1, sample, target), func(si *directorpb.ShardInfo) {
			si.NodeInfo.CudaDevices = make([]*directorpb.CudaDeviceInfo, maxDevices+1)
		}), wantCode: codes.InvalidArgument, wantMsg: "node_info.cuda_devices has 65 devices, over the cap of 64"},
		{name: "long device name", req: withShard(shard("site-3", 1, sample, target), func(si *directorpb.ShardInfo) {
			si.NodeInfo.CudaDevices = []*directorpb.CudaDeviceInfo{{Name: strings.Repeat("n", maxDeviceField+1)}}
		}), wantCode: codes.InvalidArgument, wantMsg: "node_info.cuda_devices[0].name of 257 bytes exceeds the cap of 256"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := c.dir.UpdateShardInfo(context.Background(), tt.req)
			if got := status.Code(err); got != tt.wantCode {
				t.Fatalf("code: got %v (%v), want %v", got, err, tt.wantCode)
			}
			if err != nil {
				if !strings.Contains(status.Convert(err).Message(), tt.wantMsg) {
					t.Fatalf("message: got %q, want it to contain %q", status.Convert(err).Message(), tt.wantMsg)
				}
				return
			}
			if resp.GetAccepted() != tt.wantAccepted {
				t.Fatalf("accepted: got %v, want %v", resp.GetAccepted(), tt.wantAccepted)
			}
		})
	}
	envoys, err := c.dir.GetEnvoys(context.Background(), &directorpb.GetEnvoysRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(envoys.GetEnvoyInfos()); n != 1 {
		t.Fatalf("envoys: got %d, want only the accepted one", n)
	}
	if got := envoys.GetEnvoyInfos()[0].GetShardInfo().GetNSamples(); got != 200 {
		t.Fatalf("n_samples after update: got %d, want 200", got)
	}
}

// withShard changes a request's shard info with edit.
func withShard(req *directorpb.UpdateShardInfoRequest, edit func(*directorpb.ShardInfo)) *directorpb.UpdateShardInfoRequest {
	edit(req.ShardInfo)
	return req
}

func TestAnyShapeWithoutFederationShapes(t *testing.T) {
	cfg := testCfg(t, newFakeClock())
	cfg.SampleShape, cfg.TargetShape = nil, nil
	c := mustServeBufconn(t, mustNew(t, cfg))
	resp, err := c.dir.UpdateShardInfo(context.Background(), shard("x", 1, []string{"3"}, nil))
	if err != nil || !resp.GetAccepted() {
		t.Fatalf("got %v %v, want accepted", resp, err)
	}
}

func TestUpdateEnvoyStatusAndGetEnvoys(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	cfg := testCfg(t, clock)
	c := mustServeBufconn(t, mustNew(t, cfg))

	_, err := c.dir.UpdateEnvoyStatus(ctx, &directorpb.UpdateEnvoyStatusRequest{Name: "site-1"})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("heartbeat of unknown envoy: got %v, want NotFound", err)
	}
	dev := &directorpb.CudaDeviceInfo{Index: 1, MemoryTotal: 16 << 30, Name: "T4"}
	req := shard("site-1", 100, cfg.SampleShape, cfg.TargetShape)
	req.ShardInfo.NodeInfo.CudaDevices = []*directorpb.CudaDeviceInfo{dev}
	if _, err := c.dir.UpdateShardInfo(ctx, req); err != nil {
		t.Fatal(err)
	}
	if _, err := c.dir.UpdateShardInfo(ctx, shard("site-2", 50, cfg.SampleShape, cfg.TargetShape)); err != nil {
		t.Fatal(err)
	}

	clock.Add(15 * time.Second)
	resp, err := c.dir.UpdateEnvoyStatus(ctx, &directorpb.UpdateEnvoyStatusRequest{Name: "site-1", IsExperimentRunning: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetHealthCheckPeriod().AsDuration(); got != cfg.HealthCheckPeriod {
		t.Fatalf("health_check_period: got %v, want %v", got, cfg.HealthCheckPeriod)
	}
	clock.Add(10 * time.Second) // site-2 last seen 25s ago: offline; site-1 10s ago
	got, err := c.dir.GetEnvoys(ctx, &directorpb.GetEnvoysRequest{})
	if err != nil {
		t.Fatal(err)
	}
	infos := got.GetEnvoyInfos()
	if len(infos) != 2 {
		t.Fatalf("envoys: got %d, want 2", len(infos))
	}
	s1, s2 := infos[0], infos[1]
	if s1.GetShardInfo().GetNodeInfo().GetName() != "site-1" || s2.GetShardInfo().GetNodeInfo().GetName() != "site-2" {
		t.Fatalf("order: got %v", infos)
	}
	if !s1.GetIsOnline() || !s1.GetIsExperimentRunning() || s2.GetIsOnline() || s2.GetIsExperimentRunning() {
		t.Fatalf("liveness: got site-1 %v/%v site-2 %v/%v", s1.GetIsOnline(), s1.GetIsExperimentRunning(), s2.GetIsOnline(), s2.GetIsExperimentRunning())
	}
	if want := clock.Now().Add(-10 * time.Second); !s1.GetLastUpdated().AsTime().Equal(want) {
		t.Fatalf("last_updated: got %v, want %v", s1.GetLastUpdated().AsTime(), want)
	}
	if got := s1.GetValidDuration().AsDuration(); got != 2*cfg.HealthCheckPeriod {
		t.Fatalf("valid_duration: got %v", got)
	}
	si := s1.GetShardInfo()
	if si.GetNSamples() != 100 || si.GetShardDescription() != "shard of site-1" || len(si.GetSampleShape()) != 2 {
		t.Fatalf("shard info: got %v", si)
	}
	if d := si.GetNodeInfo().GetCudaDevices(); len(d) != 1 || d[0].GetName() != "T4" || d[0].GetMemoryTotal() != 16<<30 {
		t.Fatalf("cuda devices: got %v", d)
	}
}

// TestHeartbeatGPUStatus: the GPU status an OpenFL envoy sends with every
// UpdateEnvoyStatus replaces the registration's, GetEnvoys returns it, a
// heartbeat without devices (fedplane's envoy, a site without GPUs) keeps
// it, and a list over the caps is refused as at registration.
func TestHeartbeatGPUStatus(t *testing.T) {
	ctx := context.Background()
	cfg := testCfg(t, newFakeClock())
	c := mustServeBufconn(t, mustNew(t, cfg))
	req := shard("site-1", 100, cfg.SampleShape, cfg.TargetShape)
	req.ShardInfo.NodeInfo.CudaDevices = []*directorpb.CudaDeviceInfo{{Index: 0, Name: "T4"}}
	if _, err := c.dir.UpdateShardInfo(ctx, req); err != nil {
		t.Fatal(err)
	}
	a100 := func(i uint64, used uint64) *directorpb.CudaDeviceInfo {
		return &directorpb.CudaDeviceInfo{Index: i, MemoryTotal: 80 << 30, MemoryUtilized: used, DeviceUtilization: "37%",
			CudaDriverVersion: "550.54", CudaVersion: "12.4", Name: "A100"}
	}
	devices := func() []*directorpb.CudaDeviceInfo {
		t.Helper()
		resp, err := c.dir.GetEnvoys(ctx, &directorpb.GetEnvoysRequest{})
		if err != nil {
			t.Fatal(err)
		}
		return resp.GetEnvoyInfos()[0].GetShardInfo().GetNodeInfo().GetCudaDevices()
	}
	tests := []struct {
		name     string
		devs     []*directorpb.CudaDeviceInfo
		wantCode codes.Code
		want     []*directorpb.CudaDeviceInfo
	}{
		{"reported", []*directorpb.CudaDeviceInfo{a100(0, 1<<30), a100(1, 2<<30)}, codes.OK, []*directorpb.CudaDeviceInfo{a100(0, 1<<30), a100(1, 2<<30)}},
		{"changed", []*directorpb.CudaDeviceInfo{a100(0, 5<<30)}, codes.OK, []*directorpb.CudaDeviceInfo{a100(0, 5<<30)}},
		{"none keeps", nil, codes.OK, []*directorpb.CudaDeviceInfo{a100(0, 5<<30)}},
		{"over the cap", make([]*directorpb.CudaDeviceInfo, maxDevices+1), codes.InvalidArgument, []*directorpb.CudaDeviceInfo{a100(0, 5<<30)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.dir.UpdateEnvoyStatus(ctx, &directorpb.UpdateEnvoyStatusRequest{Name: "site-1", CudaDevices: tt.devs})
			if status.Code(err) != tt.wantCode {
				t.Fatalf("UpdateEnvoyStatus: got %v, want %v", err, tt.wantCode)
			}
			got := devices()
			if len(got) != len(tt.want) {
				t.Fatalf("devices: got %v, want %v", got, tt.want)
			}
			for i := range got {
				if !proto.Equal(got[i], tt.want[i]) {
					t.Fatalf("device %d: got %v, want %v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestGetDatasetInfo(t *testing.T) {
	cfg := testCfg(t, newFakeClock())
	c := mustServeBufconn(t, mustNew(t, cfg))
	resp, err := c.dir.GetDatasetInfo(context.Background(), &directorpb.GetDatasetInfoRequest{})
	if err != nil {
		t.Fatal(err)
	}
	si := resp.GetShardInfo()
	if strings.Join(si.GetSampleShape(), ",") != "28,28" || strings.Join(si.GetTargetShape(), ",") != "1" {
		t.Fatalf("got %v", si)
	}
}
