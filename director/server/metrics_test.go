package server

import (
	"archive/zip"
	"bytes"
	"context"
	"net"
	"net/http"
	"testing"

	dto "github.com/prometheus/client_model/go"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/basepb"
	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/api/scrape/scrapetest"
)

// TestMetrics scrapes a real director's /metrics while a federation works:
// every family has its name and type, a heartbeat counts a gRPC call, a
// finished round counts a round with its durations and bytes, an admin
// command counts, and the gauges follow envoys and jobs. /readyz turns 503
// once the director drains.
func TestMetrics(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	f := startFedWith(t, testCfg(t, newFakeClock()), Config{MetricsListener: lis})
	ctx := context.Background()

	fams := scrapetest.Scrape(t, addr)
	types := map[string]dto.MetricType{
		"fedplane_envoys":                       dto.MetricType_GAUGE,
		"fedplane_jobs":                         dto.MetricType_GAUGE,
		"fedplane_heartbeat_lag_seconds":        dto.MetricType_GAUGE,
		"fedplane_rounds_completed_total":       dto.MetricType_COUNTER,
		"fedplane_round_duration_seconds":       dto.MetricType_HISTOGRAM,
		"fedplane_aggregation_duration_seconds": dto.MetricType_HISTOGRAM,
		"fedplane_received_bytes_total":         dto.MetricType_COUNTER,
		"fedplane_sent_bytes_total":             dto.MetricType_COUNTER,
	}
	for name, typ := range types {
		if fams[name] == nil {
			t.Errorf("%s: missing", name)
		} else if got := fams[name].GetType(); got != typ {
			t.Errorf("%s: got type %v, want %v", name, got, typ)
		}
	}
	if got := fams.Value("fedplane_rounds_completed_total", nil); got != 0 {
		t.Errorf("rounds before any: got %v, want 0", got)
	}

	f.register(t, "site-a")
	hb := map[string]string{"method": directorpb.Director_UpdateEnvoyStatus_FullMethodName, "code": "OK"}
	before := scrapetest.Scrape(t, addr).Value("fedplane_grpc_calls_total", hb)
	if _, err := f.c.dir.UpdateEnvoyStatus(ctx, &directorpb.UpdateEnvoyStatusRequest{Name: "site-a"}); err != nil {
		t.Fatal(err)
	}
	fams = scrapetest.Scrape(t, addr)
	if got := fams.Value("fedplane_grpc_calls_total", hb); got != max(before, 0)+1 {
		t.Errorf("heartbeat calls: got %v, want %v", got, max(before, 0)+1)
	}
	if got := fams.Value("fedplane_envoys", map[string]string{"state": "online"}); got != 1 {
		t.Errorf("envoys online: got %v, want 1", got)
	}
	if got := fams.Value("fedplane_envoys", map[string]string{"state": "offline"}); got != 0 {
		t.Errorf("envoys offline: got %v, want 0", got)
	}

	// One round of an OpenFL experiment on one envoy.
	var zbuf bytes.Buffer
	zw := zip.NewWriter(&zbuf)
	w, _ := zw.Create("job.json")
	w.Write([]byte(`{"name": "x", "envoys": ["site-a"], "rounds": 1, "train": {"command": ["true"]}}`))
	zw.Close()
	s, err := f.c.dir.SetNewExperiment(ctx)
	if err != nil {
		t.Fatal(err)
	}
	model := &basepb.ModelProto{Tensors: []*basepb.NamedTensor{
		namedTensor("w", 0, false, true, []string{"model"}, []int32{2}, 1, 2),
		namedTensor("b", 0, false, true, []string{"model"}, []int32{1}, 0.5),
	}}
	if err := s.Send(&directorpb.ExperimentInfo{Name: "metrics-exp", CollaboratorNames: []string{"site-a"}, ModelProto: model,
		ExperimentData: &directorpb.ExperimentData{Size: uint32(zbuf.Len()), Npbytes: zbuf.Bytes()}}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CloseAndRecv(); err != nil {
		t.Fatal(err)
	}
	id := f.waitFor(t, "site-a")
	if got := scrapetest.Scrape(t, addr).Value("fedplane_jobs", map[string]string{"status": "in_progress"}); got != 1 {
		t.Errorf("jobs in progress: got %v, want 1", got)
	}
	c := &collaborator{name: "site-a", fed: id, model: map[string][]float32{}}
	c.getTasks(t, f)
	c.fetch(t, f, 0)
	c.train(t, f, 0, 1, 1)
	f.settle(t)
	do(t, f.admin, api.CmdListJobs)

	fams = scrapetest.Scrape(t, addr)
	for _, tt := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"fedplane_rounds_completed_total", nil, 1},
		{"fedplane_round_duration_seconds", nil, 1},
		{"fedplane_aggregation_duration_seconds", nil, 1},
		{"fedplane_jobs", map[string]string{"status": "finished"}, 1},
		{"fedplane_jobs", map[string]string{"status": "in_progress"}, 0},
		{"fedplane_admin_commands_total", map[string]string{"command": "list_jobs", "status": "ok"}, 1},
	} {
		if got := fams.Value(tt.name, tt.labels); got != tt.want {
			t.Errorf("%s%v: got %v, want %v", tt.name, tt.labels, got, tt.want)
		}
	}
	for _, k := range []struct{ name, kind string }{
		{"fedplane_received_bytes_total", "archives"},
		{"fedplane_received_bytes_total", "results"},
		{"fedplane_sent_bytes_total", "models"},
	} {
		if got := fams.Value(k.name, map[string]string{"kind": k.kind}); got <= 0 {
			t.Errorf("%s{kind=%s}: got %v, want > 0", k.name, k.kind, got)
		}
	}

	if got := scrapetest.Status(t, "http://"+addr+"/healthz"); got != http.StatusOK {
		t.Errorf("/healthz: got %d, want 200", got)
	}
	if got := scrapetest.Status(t, "http://"+addr+"/readyz"); got != http.StatusOK {
		t.Errorf("/readyz serving: got %d, want 200", got)
	}
	f.d.Drain()
	if got := scrapetest.Status(t, "http://"+addr+"/readyz"); got != http.StatusServiceUnavailable {
		t.Errorf("/readyz draining: got %d, want 503", got)
	}
}
