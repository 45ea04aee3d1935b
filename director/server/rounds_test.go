package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/aggregatorpb"
	"github.com/fedplane/fedplane/api/basepb"
	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/api/logspb"
	"github.com/fedplane/fedplane/api/transferspb"
	"github.com/fedplane/fedplane/director"
	"github.com/fedplane/fedplane/store"
	"github.com/fedplane/fedplane/tensor"
)

// fed is a director served in process: gRPC over bufconn, admin on
// loopback, and a second handle on its database for the tests to read.
type fed struct {
	d     *director.Director
	db    *store.DB
	c     clients
	admin *adminproto.Client
}

func startFed(t *testing.T, cfg director.Config) *fed {
	t.Helper()
	return startFedWith(t, cfg, Config{})
}

// startFedWith starts a federation as startFed does, served with scfg.
func startFedWith(t *testing.T, cfg director.Config, scfg Config) *fed {
	t.Helper()
	d := mustNew(t, cfg)
	lis := bufconn.Listen(1 << 20)
	adminLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, d, scfg, lis, adminLis) }()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return &fed{d: d, db: mustStore(t, cfg.DataDir), c: clients{dir: directorpb.NewDirectorClient(conn), agg: aggregatorpb.NewAggregatorClient(conn), log: logspb.NewTrainingLogsClient(conn), xfr: transferspb.NewTransfersClient(conn)},
		admin: &adminproto.Client{Addr: adminLis.Addr().String(), Timeout: 5 * time.Second}}
}

// register registers and heartbeats envoys so the scheduler sees them free.
func (f *fed) register(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := f.c.dir.UpdateShardInfo(context.Background(), shard(n, 10, []string{"28", "28"}, []string{"1"})); err != nil {
			t.Fatal(err)
		}
	}
}

// submitJob uploads a job folder and returns its id.
func (f *fed) submitJob(t *testing.T, manifest string) string {
	t.Helper()
	reply := submit(t, f.admin, zipOf(t, writeJobDir(t, manifest)))
	if reply.Status() != adminproto.StatusOK {
		t.Fatalf("submit: %s %s", reply.Status(), reply.Info())
	}
	return reply.Meta[api.MetaJobID].(string)
}

// waitFor asks WaitExperiment for envoy's work with a deadline.
func (f *fed) waitFor(t *testing.T, envoy string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := f.c.dir.WaitExperiment(ctx, &directorpb.WaitExperimentRequest{CollaboratorName: envoy})
	if err != nil {
		t.Fatalf("WaitExperiment(%s): %v", envoy, err)
	}
	return resp.GetExperimentName()
}

func hdr(envoy, id string) *aggregatorpb.MessageHeader {
	return &aggregatorpb.MessageHeader{Sender: envoy, Receiver: "director", FederationUuid: id}
}

// train plays an envoy's round: get the task, fetch the model, add delta to
// every value, and send the results with dataSize.
func (f *fed) train(t *testing.T, envoy, id string, delta float32, dataSize int32) error {
	t.Helper()
	ctx := context.Background()
	tasks, err := f.nextTask(t, envoy, id)
	if err != nil {
		return err
	}
	if len(tasks.GetTasks()) != 1 || tasks.GetTasks()[0].GetName() != "train" {
		t.Fatalf("GetTasks: got %v, want the train task", tasks)
	}
	round := tasks.GetRoundNumber()
	model := map[string][]float32{}
	shapes := map[string][]int64{}
	for _, name := range []string{"b", "w"} {
		resp, err := f.c.agg.GetAggregatedTensor(ctx, &aggregatorpb.GetAggregatedTensorRequest{Header: hdr(envoy, id), TensorName: name, RoundNumber: round})
		if err != nil {
			return err
		}
		span, err := tensor.FromNamedTensor(resp.GetTensor())
		if err != nil {
			t.Fatal(err)
		}
		x, err := tensor.NewIndex(bytes.NewReader(resp.GetTensor().GetDataBytes()), []tensor.Span{{Name: name, DType: "F32", Shape: span.Shape, Size: span.Size}})
		if err != nil {
			t.Fatal(err)
		}
		vals, _ := x.Float32s(name)
		for i := range vals {
			vals[i] += delta
		}
		model[name], shapes[name] = vals, span.Shape
	}
	return f.send(t, envoy, id, round, dataSize, model, shapes)
}

// nextTask asks GetTasks until the answer is not "sleep": the previous
// round's aggregation runs after its last report returned, as a real envoy
// sees it.
func (f *fed) nextTask(t *testing.T, envoy, id string) (*aggregatorpb.GetTasksResponse, error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		tasks, err := f.c.agg.GetTasks(context.Background(), &aggregatorpb.GetTasksRequest{Header: hdr(envoy, id)})
		if err != nil || tasks.GetSleepTime() == 0 || time.Now().After(deadline) {
			return tasks, err
		}
		f.settle(t)
	}
}

// settle waits until the round in flight, if any, has been aggregated:
// until the director's background work is done.
func (f *fed) settle(t *testing.T) {
	t.Helper()
	f.d.WaitIdle()
}

// send streams TaskResults for a model.
func (f *fed) send(t *testing.T, envoy, id string, round, dataSize int32, model map[string][]float32, shapes map[string][]int64) error {
	t.Helper()
	var file bytes.Buffer
	if err := tensor.WriteFloat32Safetensors(&file, model, shapes); err != nil {
		t.Fatal(err)
	}
	x, _, err := tensor.ReadSafetensors(bytes.NewReader(file.Bytes()), int64(file.Len()))
	if err != nil {
		t.Fatal(err)
	}
	stream, err := f.c.agg.SendLocalTaskResults(context.Background())
	if err != nil {
		return err
	}
	w := tensor.NewChunkWriter(stream.Send, 0)
	_, err = tensor.WriteTaskResults(w, tensor.TaskResultsHeader{Sender: envoy, Receiver: "director", FederationUUID: id, Round: round, TaskName: "train", DataSize: dataSize},
		x, []tensor.Metric{{Name: "accuracy", Value: float32(dataSize) / 100}})
	if err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	_, err = stream.CloseAndRecv()
	return err
}

func TestRoundsOverTheAggregator(t *testing.T) {
	ctx := context.Background()
	f := startFed(t, testCfg(t, newFakeClock()))
	f.register(t, "site-a", "site-b", "site-c")
	id := f.submitJob(t, `{"name": "two-rounds", "envoys": ["site-a", "site-b"], "rounds": 2, "train": {"command": ["true"]}}`)
	if got := f.waitFor(t, "site-a"); got != id {
		t.Fatalf("WaitExperiment: got %q, want %q", got, id)
	}

	// The archive, with its size and sha256 in the header.
	stream, err := f.c.dir.GetExperimentData(ctx, &directorpb.GetExperimentDataRequest{ExperimentName: id, CollaboratorName: "site-a"})
	if err != nil {
		t.Fatal(err)
	}
	var archive bytes.Buffer
	for {
		chunk, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if int(chunk.GetSize()) != len(chunk.GetNpbytes()) {
			t.Fatalf("chunk size %d != %d bytes", chunk.GetSize(), len(chunk.GetNpbytes()))
		}
		archive.Write(chunk.GetNpbytes())
	}
	md, _ := stream.Header()
	sum := sha256.Sum256(archive.Bytes())
	if got := md.Get(api.MDArchiveSHA256); len(got) != 1 || got[0] != hex.EncodeToString(sum[:]) {
		t.Fatalf("archive sha256 header %v, want %x", got, sum)
	}

	refusals := []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"data for a non-participant", func() error {
			s, _ := f.c.dir.GetExperimentData(ctx, &directorpb.GetExperimentDataRequest{ExperimentName: id, CollaboratorName: "site-c"})
			_, err := s.Recv()
			return err
		}, codes.PermissionDenied},
		{"tasks for a non-participant", func() error {
			_, err := f.c.agg.GetTasks(ctx, &aggregatorpb.GetTasksRequest{Header: hdr("site-c", id)})
			return err
		}, codes.PermissionDenied},
		{"tasks of an unknown experiment", func() error {
			_, err := f.c.agg.GetTasks(ctx, &aggregatorpb.GetTasksRequest{Header: hdr("site-a", "nope")})
			return err
		}, codes.NotFound},
		{"tensor of a wrong round", func() error {
			_, err := f.c.agg.GetAggregatedTensor(ctx, &aggregatorpb.GetAggregatedTensorRequest{Header: hdr("site-a", id), TensorName: "w", RoundNumber: 5})
			return err
		}, codes.FailedPrecondition},
		{"unknown tensor", func() error {
			_, err := f.c.agg.GetAggregatedTensor(ctx, &aggregatorpb.GetAggregatedTensorRequest{Header: hdr("site-a", id), TensorName: "zz"})
			return err
		}, codes.NotFound},
		{"results of another layout", func() error {
			return f.send(t, "site-a", id, 0, 10, map[string][]float32{"w": {1, 2}}, map[string][]int64{"w": {2}})
		}, codes.InvalidArgument},
		{"results for a wrong round", func() error {
			return f.send(t, "site-a", id, 3, 10, map[string][]float32{"w": make([]float32, 6), "b": make([]float32, 2)}, map[string][]int64{"w": {2, 3}, "b": {2}})
		}, codes.FailedPrecondition},
		{"results with no samples", func() error {
			return f.send(t, "site-a", id, 0, 0, map[string][]float32{"w": make([]float32, 6), "b": make([]float32, 2)}, map[string][]int64{"w": {2, 3}, "b": {2}})
		}, codes.InvalidArgument},
		{"a chunk whose size lies", func() error {
			s, err := f.c.agg.SendLocalTaskResults(ctx)
			if err != nil {
				return err
			}
			s.Send(&basepb.DataStream{Size: 10, Npbytes: []byte("abc")})
			_, err = s.CloseAndRecv()
			return err
		}, codes.InvalidArgument},
		{"an empty stream", func() error {
			s, err := f.c.agg.SendLocalTaskResults(ctx)
			if err != nil {
				return err
			}
			_, err = s.CloseAndRecv()
			return err
		}, codes.InvalidArgument},
		{"failure from a non-participant", func() error {
			_, err := f.c.dir.SetExperimentFailed(ctx, &directorpb.SetExperimentFailedRequest{ExperimentName: id, CollaboratorName: "site-c", ErrorDescription: "x"})
			return err
		}, codes.PermissionDenied},
	}
	for _, tt := range refusals {
		t.Run(tt.name, func(t *testing.T) {
			if got := status.Code(tt.call()); got != tt.want {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}

	// Round 0: a adds 1 with 10 samples, b adds 5 with 30: mean +4.
	if err := f.train(t, "site-a", id, 1, 10); err != nil {
		t.Fatal(err)
	}
	if err := f.send(t, "site-a", id, 0, 10, map[string][]float32{"w": make([]float32, 6), "b": make([]float32, 2)}, map[string][]int64{"w": {2, 3}, "b": {2}}); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("second report of a round: got %v, want AlreadyExists", err)
	}
	tasks, err := f.c.agg.GetTasks(ctx, &aggregatorpb.GetTasksRequest{Header: hdr("site-a", id)})
	if err != nil || tasks.GetSleepTime() == 0 || len(tasks.GetTasks()) != 0 {
		t.Fatalf("GetTasks after reporting: %v %v, want sleep_time", tasks, err)
	}
	if err := f.train(t, "site-b", id, 5, 30); err != nil {
		t.Fatal(err)
	}
	// Round 1: +2 and +2: mean +2.
	for _, e := range []string{"site-a", "site-b"} {
		if err := f.train(t, e, id, 2, 20); err != nil {
			t.Fatal(err)
		}
	}
	f.settle(t)
	e, err := f.db.GetExperiment(ctx, id)
	if err != nil || e.Status != api.JobFinished {
		t.Fatalf("after the last round: %+v %v", e, err)
	}
	// list_jobs reports the rounds done, from the same one query as the list.
	reply := do(t, f.admin, api.CmdListJobs)
	var jobs []api.Job
	if b, err := json.Marshal(reply.Meta[api.MetaJobs]); err != nil || json.Unmarshal(b, &jobs) != nil || len(jobs) != 1 || jobs[0].RoundsDone != 2 || jobs[0].Rounds != 2 {
		t.Fatalf("list_jobs after the last round: %+v, want 2 of 2 rounds done", jobs)
	}
	rounds, _ := f.db.Rounds(ctx, id)
	if len(rounds) != 3 {
		t.Fatalf("rounds stored: got %d, want 3", len(rounds))
	}
	x, file, err := tensor.OpenSafetensors(filepath.Join(f.d.Config().DataDir, rounds[2].ModelPath))
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	w, _ := x.Float32s("w")
	for i, want := range []float32{7, 8, 9, 10, 11, 12} {
		if w[i] != want {
			t.Fatalf("final w: got %v, want start + 4 + 2", w)
		}
	}
	metrics, _ := f.db.Metrics(ctx, id)
	var agg []float64
	for _, m := range metrics {
		if m.Origin == api.OriginAggregator && m.Name == "accuracy" {
			agg = append(agg, m.Value)
		}
	}
	// Round 0: accuracy 0.1 (10 samples) and 0.3 (30): weighted 0.25.
	if len(agg) != 2 || agg[0] < 0.2499 || agg[0] > 0.2501 {
		t.Fatalf("aggregated accuracy: got %v", agg)
	}
	tasks, err = f.c.agg.GetTasks(ctx, &aggregatorpb.GetTasksRequest{Header: hdr("site-a", id)})
	if err != nil || !tasks.GetQuit() {
		t.Fatalf("GetTasks after the end: %v %v, want quit", tasks, err)
	}
	if _, err := os.Stat(filepath.Join(f.d.Config().DataDir, experimentsDir, id, "results")); err == nil {
		entries, _ := os.ReadDir(filepath.Join(f.d.Config().DataDir, experimentsDir, id, "results"))
		if len(entries) != 0 {
			t.Fatalf("reports kept after aggregation: %d", len(entries))
		}
	}
}

func TestFailureAbortAndStopSignal(t *testing.T) {
	ctx := context.Background()
	f := startFed(t, testCfg(t, newFakeClock()))
	f.register(t, "site-a", "site-b")
	first := f.submitJob(t, `{"name": "one", "envoys": ["site-a"], "rounds": 1, "train": {"command": ["true"]}}`)
	second := f.submitJob(t, `{"name": "two", "envoys": ["site-b"], "rounds": 1, "train": {"command": ["true"]}}`)
	if f.waitFor(t, "site-a") != first || f.waitFor(t, "site-b") != second {
		t.Fatal("jobs on disjoint envoys did not both start")
	}

	// An envoy's failure ends the experiment with its description; a later
	// failure or finish never overwrites it.
	_, err := f.c.dir.SetExperimentFailed(ctx, &directorpb.SetExperimentFailedRequest{ExperimentName: first, CollaboratorName: "site-a", ErrorCode: 3, ErrorDescription: "exit status 3: boom"})
	if err != nil {
		t.Fatal(err)
	}
	f.c.dir.SetExperimentFailed(ctx, &directorpb.SetExperimentFailedRequest{ExperimentName: first, CollaboratorName: "site-a", ErrorDescription: "second"})
	e, _ := f.db.GetExperiment(ctx, first)
	if e.Status != api.JobFailed || !strings.Contains(e.Reason, "site-a") || !strings.Contains(e.Reason, "boom") {
		t.Fatalf("failed experiment: %+v", e)
	}
	if tasks, err := f.c.agg.GetTasks(ctx, &aggregatorpb.GetTasksRequest{Header: hdr("site-a", first)}); err != nil || !tasks.GetQuit() {
		t.Fatalf("GetTasks of a failed experiment: %v %v, want quit", tasks, err)
	}

	// Abort of a running experiment: aborted at once, and the envoy, still
	// running it, is told to stop in its heartbeat's header.
	reply := do(t, f.admin, "abort_job "+second)
	if reply.Status() != adminproto.StatusOK {
		t.Fatalf("abort: %s %s", reply.Status(), reply.Info())
	}
	var md metadata.MD
	if _, err := f.c.dir.UpdateEnvoyStatus(ctx, &directorpb.UpdateEnvoyStatusRequest{Name: "site-b", IsExperimentRunning: true}, grpc.Header(&md)); err != nil {
		t.Fatal(err)
	}
	if got := md.Get(api.MDStop); len(got) != 1 || got[0] != second {
		t.Fatalf("stop header: got %v, want [%s]", got, second)
	}
	waitCtx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := f.c.dir.WaitExperiment(waitCtx, &directorpb.WaitExperimentRequest{CollaboratorName: "site-b"}); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("WaitExperiment offered an ended experiment: %v", err)
	}
}

// TestConcurrentDuplicateReports sends one envoy's report many times at once
// (a retry racing its first attempt): exactly one is stored, the rest are
// AlreadyExists, and the round still aggregates.
func TestConcurrentDuplicateReports(t *testing.T) {
	ctx := context.Background()
	f := startFed(t, testCfg(t, newFakeClock()))
	f.register(t, "site-a", "site-b")
	id := f.submitJob(t, `{"name": "dup", "envoys": ["site-a", "site-b"], "rounds": 1, "train": {"command": ["true"]}}`)
	f.waitFor(t, "site-a")
	if _, err := f.c.agg.GetTasks(ctx, &aggregatorpb.GetTasksRequest{Header: hdr("site-a", id)}); err != nil {
		t.Fatal(err)
	}
	model := map[string][]float32{"w": {1, 1, 1, 1, 1, 1}, "b": {1, 1}}
	shapes := map[string][]int64{"w": {2, 3}, "b": {2}}
	codesSeen := make(chan codes.Code, 8)
	for range 8 {
		go func() { codesSeen <- status.Code(f.send(t, "site-a", id, 0, 10, model, shapes)) }()
	}
	ok := 0
	for range 8 {
		switch c := <-codesSeen; c {
		case codes.OK:
			ok++
		case codes.AlreadyExists:
		default:
			t.Fatalf("concurrent duplicate: got %v", c)
		}
	}
	if ok != 1 {
		t.Fatalf("stored reports: got %d, want 1", ok)
	}
	if err := f.train(t, "site-b", id, 1, 10); err != nil {
		t.Fatal(err)
	}
	f.settle(t)
	if e, _ := f.db.GetExperiment(ctx, id); e.Status != api.JobFinished {
		t.Fatalf("after both reports: %s %q", e.Status, e.Reason)
	}
}
