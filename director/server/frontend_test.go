package server

import (
	"archive/zip"
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/aggregatorpb"
	"github.com/fedplane/fedplane/api/basepb"
	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/store"
	"github.com/fedplane/fedplane/tensor"
)

// trainWithAccuracy plays one round for envoy, reporting accuracy acc.
func (f *fed) trainWithAccuracy(t *testing.T, envoy, id string, delta float32, dataSize int32, acc float32) {
	t.Helper()
	ctx := context.Background()
	tasks, err := f.nextTask(t, envoy, id)
	if err != nil || len(tasks.GetTasks()) != 1 {
		t.Fatalf("GetTasks: %v %v", tasks, err)
	}
	w := []float32{1, 2, 3, 4, 5, 6}
	for i := range w {
		w[i] += delta
	}
	var file bytes.Buffer
	tensor.WriteFloat32Safetensors(&file, map[string][]float32{"w": w, "b": {0.5, -0.5}}, map[string][]int64{"w": {2, 3}, "b": {2}})
	x, _, err := tensor.ReadSafetensors(bytes.NewReader(file.Bytes()), int64(file.Len()))
	if err != nil {
		t.Fatal(err)
	}
	stream, err := f.c.agg.SendLocalTaskResults(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cw := tensor.NewChunkWriter(stream.Send, 0)
	tensor.WriteTaskResults(cw, tensor.TaskResultsHeader{Sender: envoy, FederationUUID: id, Round: tasks.GetRoundNumber(), TaskName: "train", DataSize: dataSize},
		x, []tensor.Metric{{Name: "accuracy", Value: acc}})
	cw.Close()
	if _, err := stream.CloseAndRecv(); err != nil {
		t.Fatal(err)
	}
}

func TestBestLastModelsAndMetricStream(t *testing.T) {
	ctx := context.Background()
	f := startFed(t, testCfg(t, newFakeClock()))
	f.register(t, "site-a")
	id := f.submitJob(t, `{"name": "best", "envoys": ["site-a"], "rounds": 3, "train": {"command": ["true"]}, "best_metric": {"name": "accuracy", "mode": "max"}}`)
	f.waitFor(t, "site-a")

	stream, err := f.c.dir.GetMetricStream(ctx, &directorpb.GetMetricStreamRequest{ExperimentName: id})
	if err != nil {
		t.Fatal(err)
	}
	// Round r's metrics describe the model round r started from: round 1
	// started from the model round 0 made (+10) and reports the best
	// accuracy, so that is the best model; the final model (+30) is the last.
	f.trainWithAccuracy(t, "site-a", id, 10, 5, 0.5)
	f.trainWithAccuracy(t, "site-a", id, 20, 5, 0.9)
	f.trainWithAccuracy(t, "site-a", id, 30, 5, 0.7)

	var got []string
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("metric stream: %v", err)
		}
		got = append(got, m.GetMetricOrigin()+"/"+m.GetMetricName())
	}
	if len(got) != 6 {
		t.Fatalf("metric stream before its end: got %v, want 3 envoy and 3 aggregator metrics", got)
	}

	first := func(mp *basepb.ModelProto) float32 {
		for _, nt := range mp.GetTensors() {
			if nt.GetName() == "w" {
				x, _ := tensor.NewIndex(bytes.NewReader(nt.GetDataBytes()), []tensor.Span{{Name: "w", DType: "F32", Shape: []int64{6}, Size: 24}})
				v, _ := x.Float32s("w")
				return v[0]
			}
		}
		return -1
	}
	best, err := f.c.dir.GetTrainedModel(ctx, &directorpb.GetTrainedModelRequest{ExperimentName: id, ModelType: directorpb.GetTrainedModelRequest_BEST_MODEL})
	if err != nil {
		t.Fatal(err)
	}
	last, err := f.c.agg.GetTrainedModel(ctx, &aggregatorpb.GetTrainedModelRequest{ExperimentName: id, ModelType: aggregatorpb.GetTrainedModelRequest_LAST_MODEL})
	if err != nil {
		t.Fatal(err)
	}
	if got := first(best.GetModelProto()); got != 11 {
		t.Fatalf("best model w[0]: got %v, want 11 (the model of round 1, accuracy 0.9)", got)
	}
	if got := first(last.GetModelProto()); got != 31 {
		t.Fatalf("last model w[0]: got %v, want 31", got)
	}

	// The rest of the frontend view.
	st, err := f.c.dir.GetExperimentStatus(ctx, &directorpb.GetExperimentStatusRequest{ExperimentName: "best"})
	if err != nil || api.JobStatus(st.GetExperimentStatus()) != api.JobFinished {
		t.Fatalf("status by name: %v %v", st, err)
	}
	desc, err := f.c.dir.GetExperimentDescription(ctx, &directorpb.GetExperimentDescriptionRequest{Name: id[:8]})
	if err != nil {
		t.Fatal(err)
	}
	e := desc.GetExperiment()
	if e.GetTotalRounds() != 3 || e.GetCurrentRound() != 3 || e.GetProgress() != 1 || len(e.GetCollaborators()) != 1 || api.EnvoyState(e.GetCollaborators()[0].GetStatus()) != api.EnvoyFinished {
		t.Fatalf("description: %v", e)
	}
	list, err := f.c.dir.GetExperimentsList(ctx, &directorpb.GetExperimentsListRequest{})
	if err != nil || len(list.GetExperiments()) != 1 || list.GetExperiments()[0].GetCollaboratorsAmount() != 1 {
		t.Fatalf("list: %v %v", list, err)
	}
	if _, err := f.c.dir.RemoveExperimentData(ctx, &directorpb.RemoveExperimentRequest{ExperimentName: id}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.c.dir.GetExperimentStatus(ctx, &directorpb.GetExperimentStatusRequest{ExperimentName: id}); status.Code(err) != codes.NotFound {
		t.Fatalf("status after removal: got %v, want NotFound", err)
	}
}

func TestRoundTimeout(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name       string
		quorum     int
		wantStatus api.JobStatus
		wantReason string
	}{
		{"closes without the straggler", 2, api.JobFinished, ""},
		{"fails without a quorum", 3, api.JobFailed, "site-c has not reported (2 of 3 reported; quorum 3)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startFed(t, testCfg(t, newFakeClock()))
			f.register(t, "site-a", "site-b", "site-c")
			manifest := `{"name": "q", "envoys": ["site-a", "site-b", "site-c"], "rounds": 1, "round_timeout": "300ms",
				"min_envoys_per_round": ` + string(rune('0'+tt.quorum)) + `, "train": {"command": ["true"]}}`
			id := f.submitJob(t, manifest)
			f.waitFor(t, "site-a")
			f.trainWithAccuracy(t, "site-a", id, 1, 10, 0.5)
			f.trainWithAccuracy(t, "site-b", id, 3, 10, 0.5)
			var e store.Experiment
			deadline := time.Now().Add(10 * time.Second)
			for {
				e, _ = f.db.GetExperiment(ctx, id)
				if e.Status.Terminal() || time.Now().After(deadline) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			if e.Status != tt.wantStatus || !strings.Contains(e.Reason, tt.wantReason) {
				t.Fatalf("got %s %q, want %s %q", e.Status, e.Reason, tt.wantStatus, tt.wantReason)
			}
		})
	}
}

// jobZip is a fedplane job archive without a model, as a frontend sends it
// with the model in model_proto.
func jobZip(t *testing.T) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, _ := zw.Create("job.json")
	io.WriteString(w, testManifest)
	zw.Close()
	return buf.Bytes()
}

func TestSetNewExperiment(t *testing.T) {
	ctx := context.Background()
	f := startFed(t, testCfg(t, newFakeClock()))
	f.register(t, "site-a")
	model := &basepb.ModelProto{Tensors: []*basepb.NamedTensor{
		tensor.NamedTensor(tensor.Span{Name: "w", DType: "F32", Shape: []int64{2}}, []byte{0, 0, 128, 63, 0, 0, 0, 64}, nil, false),
	}}
	upload := func(name string, collabs []string) error {
		s, err := f.c.dir.SetNewExperiment(ctx)
		if err != nil {
			return err
		}
		data := jobZip(t)
		half := len(data) / 2
		for _, part := range [][]byte{data[:half], data[half:]} {
			// As Python frontends do: every chunk repeats the fields.
			if err := s.Send(&directorpb.ExperimentInfo{Name: name, CollaboratorNames: collabs, ModelProto: model,
				ExperimentData: &directorpb.ExperimentData{Size: uint32(len(part)), Npbytes: part}}); err != nil {
				return err
			}
		}
		resp, err := s.CloseAndRecv()
		if err == nil && !resp.GetAccepted() {
			t.Fatal("accepted=false without an error")
		}
		return err
	}
	tests := []struct {
		name    string
		exp     string
		collabs []string
		want    codes.Code
	}{
		{"accepted", "frontend-exp", []string{"site-a"}, codes.OK},
		{"duplicate name", "frontend-exp", []string{"site-a"}, codes.AlreadyExists},
		{"unknown collaborator", "other", []string{"site-a", "ghost"}, codes.InvalidArgument},
		{"no collaborators", "other", nil, codes.InvalidArgument},
		{"no name", "", []string{"site-a"}, codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := status.Code(upload(tt.exp, tt.collabs)); got != tt.want {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
	// The accepted one runs on site-a with the model from model_proto.
	id := f.waitFor(t, "site-a")
	resp, err := f.c.agg.GetAggregatedTensor(ctx, &aggregatorpb.GetAggregatedTensorRequest{Header: hdr("site-a", id), TensorName: "w"})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(resp.GetTensor().GetDataBytes(), []byte{0, 0, 128, 63, 0, 0, 0, 64}) {
		t.Fatalf("initial model: got %v", resp.GetTensor().GetDataBytes())
	}
	e, _ := f.db.GetExperiment(ctx, id)
	if e.Name != "frontend-exp" || e.Submitter != "__default__" {
		t.Fatalf("stored: %+v", e)
	}
}

func TestDownloadJobBundle(t *testing.T) {
	f := startFed(t, testCfg(t, newFakeClock()))
	f.register(t, "site-a")
	id := f.submitJob(t, `{"name": "dl", "envoys": ["site-a"], "rounds": 1, "train": {"command": ["true"]}, "best_metric": {"name": "accuracy", "mode": "max"}}`)
	f.waitFor(t, "site-a")
	f.trainWithAccuracy(t, "site-a", id, 1, 10, 0.8)
	f.settle(t)
	var body bytes.Buffer
	reply, err := f.admin.Download(context.Background(), adminproto.NewRequest(api.CmdDownloadJobZip+" "+id[:8]), 1<<30, &body)
	if err != nil || reply.Status() != adminproto.StatusOK {
		t.Fatalf("download: %v %v", reply, err)
	}
	zr, err := zip.NewReader(bytes.NewReader(body.Bytes()), int64(body.Len()))
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	for _, zf := range zr.File {
		rc, _ := zf.Open()
		b, _ := io.ReadAll(rc)
		rc.Close()
		files[zf.Name] = string(b)
	}
	for _, want := range []string{"job.json", "status.json", "metrics.csv", "models/last.safetensors", "models/best.safetensors"} {
		if _, ok := files[want]; !ok {
			t.Fatalf("bundle lacks %s: has %v", want, keys(files))
		}
	}
	if !strings.HasPrefix(files["metrics.csv"], "round,origin,task,name,value,time\n0,site-a,train,accuracy,0.8") {
		t.Fatalf("metrics.csv: %q", files["metrics.csv"])
	}
	if !strings.Contains(files["status.json"], `"status": "finished"`) {
		t.Fatalf("status.json: %s", files["status.json"])
	}
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestSetNewExperimentLimits: a frontend's model_proto may be larger than
// any other message the director takes (SetNewExperiment reads with
// OpenFL's limit), and one caller uploads one experiment at a time.
func TestSetNewExperimentLimits(t *testing.T) {
	ctx := context.Background()
	f := startFed(t, testCfg(t, newFakeClock()))
	f.register(t, "site-a")
	// 3 MiB of float32s: over the server's receive limit for other methods.
	const n = 3 << 18
	model := &basepb.ModelProto{Tensors: []*basepb.NamedTensor{
		tensor.NamedTensor(tensor.Span{Name: "w", DType: "F32", Shape: []int64{n}}, make([]byte, 4*n), nil, false),
	}}
	big := grpc.MaxCallSendMsgSize(api.MaxMessageSize)
	first, err := f.c.dir.SetNewExperiment(ctx, big)
	if err != nil {
		t.Fatal(err)
	}
	data := jobZip(t)
	if err := first.Send(&directorpb.ExperimentInfo{Name: "large", CollaboratorNames: []string{"site-a"}, ModelProto: model,
		ExperimentData: &directorpb.ExperimentData{Size: uint32(len(data)), Npbytes: data}}); err != nil {
		t.Fatal(err)
	}
	if _, err := first.Header(); err != nil { // admitted
		t.Fatal(err)
	}
	// While the first upload is open, the same caller's second is refused.
	second, err := f.c.dir.SetNewExperiment(ctx)
	if err == nil {
		_, err = second.CloseAndRecv()
	}
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a second upload at once: got %v, want ResourceExhausted", err)
	}
	if _, err := first.CloseAndRecv(); err != nil {
		t.Fatalf("an upload with a %d-byte model: %v", 4*n, err)
	}
	id := f.waitFor(t, "site-a")
	resp, err := f.c.agg.GetAggregatedTensor(ctx, &aggregatorpb.GetAggregatedTensorRequest{Header: hdr("site-a", id), TensorName: "w"},
		grpc.MaxCallRecvMsgSize(api.MaxMessageSize))
	if err != nil {
		t.Fatal(err)
	}
	if got := len(resp.GetTensor().GetDataBytes()); got != 4*n {
		t.Fatalf("initial model: got %d bytes, want %d", got, 4*n)
	}
}

// TestLateResultsNotCounted: a round that closed at its quorum without an
// envoy (its training failed) refuses that envoy's results for it, saying
// they are not counted, and the next round takes the envoy back.
func TestLateResultsNotCounted(t *testing.T) {
	ctx := context.Background()
	f := startFed(t, testCfg(t, newFakeClock()))
	f.register(t, "site-a", "site-b", "site-c")
	id := f.submitJob(t, `{"name": "late", "envoys": ["site-a", "site-b", "site-c"], "rounds": 2, "round_timeout": "1m",
		"min_envoys_per_round": 2, "train": {"command": ["true"]}}`)
	f.waitFor(t, "site-a")
	tasks, err := f.nextTask(t, "site-c", id) // site-c takes round 0's task, and its training fails
	if err != nil || tasks.GetRoundNumber() != 0 {
		t.Fatalf("site-c's task: %v, %v", tasks, err)
	}
	if _, err := f.c.dir.SetExperimentFailed(ctx, &directorpb.SetExperimentFailedRequest{ExperimentName: id, CollaboratorName: "site-c",
		ErrorCode: 3, ErrorDescription: "training command exited with status 3 in round 0"}); err != nil {
		t.Fatal(err)
	}
	for _, e := range []string{"site-a", "site-b"} {
		if err := f.train(t, e, id, 1, 10); err != nil {
			t.Fatal(err)
		}
	}
	f.settle(t) // round 0 closes at its quorum, without site-c
	if done, _ := f.d.Progress(mustExperiment(t, f, id)); done != 1 {
		t.Fatalf("rounds done %d, want 1", done)
	}
	model := map[string][]float32{"w": {1, 2, 3, 4}, "b": {0.5}}
	shapes := map[string][]int64{"w": {2, 2}, "b": {1}}
	err = f.send(t, "site-c", id, 0, 10, model, shapes)
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "not counted") {
		t.Fatalf("late results: got %v, want FailedPrecondition saying they are not counted", err)
	}
	if err := f.train(t, "site-c", id, 1, 10); err != nil { // round 1: back in
		t.Fatalf("site-c in round 1: %v", err)
	}
	if e := mustExperiment(t, f, id); e.Status != api.JobInProgress {
		t.Fatalf("job %s %q, want it running", e.Status, e.Reason)
	}
}

func mustExperiment(t *testing.T, f *fed, id string) store.Experiment {
	t.Helper()
	e, err := f.db.GetExperiment(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return e
}
