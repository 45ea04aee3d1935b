package envoy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/aggregatorpb"
	"github.com/fedplane/fedplane/api/basepb"
	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/api/transferspb"
	"github.com/fedplane/fedplane/job"
	"github.com/fedplane/fedplane/tensor"
)

// fakeDirector is an in-test Director and Aggregator: each RPC calls its
// hook, or answers Unimplemented when the hook is nil, and is counted.
type fakeDirector struct {
	updateShardInfo      func(context.Context, *directorpb.UpdateShardInfoRequest) (*directorpb.UpdateShardInfoResponse, error)
	updateEnvoyStatus    func(context.Context, *directorpb.UpdateEnvoyStatusRequest) (*directorpb.UpdateEnvoyStatusResponse, error)
	waitExperiment       func(context.Context, *directorpb.WaitExperimentRequest) (*directorpb.WaitExperimentResponse, error)
	getExperimentData    func(*directorpb.GetExperimentDataRequest, grpc.ServerStreamingServer[directorpb.ExperimentData]) error
	setExperimentFailed  func(context.Context, *directorpb.SetExperimentFailedRequest) (*directorpb.SetExperimentFailedResponse, error)
	getTasks             func(context.Context, *aggregatorpb.GetTasksRequest) (*aggregatorpb.GetTasksResponse, error)
	getAggregatedTensor  func(context.Context, *aggregatorpb.GetAggregatedTensorRequest) (*aggregatorpb.GetAggregatedTensorResponse, error)
	sendLocalTaskResults func(grpc.ClientStreamingServer[basepb.DataStream, aggregatorpb.SendLocalTaskResultsResponse]) error
	resultsOffset        func(context.Context, *transferspb.ResultsOffsetRequest) (*transferspb.ResultsOffsetResponse, error)

	mu    sync.Mutex
	calls map[string]int
}

func (f *fakeDirector) count(rpc string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.calls == nil {
		f.calls = map[string]int{}
	}
	f.calls[rpc]++
}

// called returns how many times rpc was called.
func (f *fakeDirector) called(rpc string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[rpc]
}

var errNoHook = status.Error(codes.Unimplemented, "no hook")

func (f *fakeDirector) UpdateShardInfo(ctx context.Context, req *directorpb.UpdateShardInfoRequest) (*directorpb.UpdateShardInfoResponse, error) {
	f.count("UpdateShardInfo")
	if f.updateShardInfo == nil {
		return &directorpb.UpdateShardInfoResponse{Accepted: true}, nil
	}
	return f.updateShardInfo(ctx, req)
}

func (f *fakeDirector) UpdateEnvoyStatus(ctx context.Context, req *directorpb.UpdateEnvoyStatusRequest) (*directorpb.UpdateEnvoyStatusResponse, error) {
	f.count("UpdateEnvoyStatus")
	if f.updateEnvoyStatus == nil {
		return nil, errNoHook
	}
	return f.updateEnvoyStatus(ctx, req)
}

func (f *fakeDirector) WaitExperiment(ctx context.Context, req *directorpb.WaitExperimentRequest) (*directorpb.WaitExperimentResponse, error) {
	f.count("WaitExperiment")
	if f.waitExperiment == nil {
		<-ctx.Done() // a long poll that never ends
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	return f.waitExperiment(ctx, req)
}

func (f *fakeDirector) GetExperimentData(req *directorpb.GetExperimentDataRequest, stream grpc.ServerStreamingServer[directorpb.ExperimentData]) error {
	f.count("GetExperimentData")
	if f.getExperimentData == nil {
		return errNoHook
	}
	return f.getExperimentData(req, stream)
}

func (f *fakeDirector) SetExperimentFailed(ctx context.Context, req *directorpb.SetExperimentFailedRequest) (*directorpb.SetExperimentFailedResponse, error) {
	f.count("SetExperimentFailed")
	if f.setExperimentFailed == nil {
		return nil, errNoHook
	}
	return f.setExperimentFailed(ctx, req)
}

func (f *fakeDirector) GetTasks(ctx context.Context, req *aggregatorpb.GetTasksRequest) (*aggregatorpb.GetTasksResponse, error) {
	f.count("GetTasks")
	if f.getTasks == nil {
		return nil, errNoHook
	}
	return f.getTasks(ctx, req)
}

func (f *fakeDirector) GetAggregatedTensor(ctx context.Context, req *aggregatorpb.GetAggregatedTensorRequest) (*aggregatorpb.GetAggregatedTensorResponse, error) {
	f.count("GetAggregatedTensor")
	if f.getAggregatedTensor == nil {
		return nil, errNoHook
	}
	return f.getAggregatedTensor(ctx, req)
}

func (f *fakeDirector) SendLocalTaskResults(stream grpc.ClientStreamingServer[basepb.DataStream, aggregatorpb.SendLocalTaskResultsResponse]) error {
	f.count("SendLocalTaskResults")
	if f.sendLocalTaskResults == nil {
		return errNoHook
	}
	return f.sendLocalTaskResults(stream)
}

func (f *fakeDirector) ResultsOffset(ctx context.Context, req *transferspb.ResultsOffsetRequest) (*transferspb.ResultsOffsetResponse, error) {
	f.count("ResultsOffset")
	if f.resultsOffset == nil {
		return nil, errNoHook
	}
	return f.resultsOffset(ctx, req)
}

// transfers adapts the fake to fedplane's Transfers service.
type transfers struct {
	transferspb.UnimplementedTransfersServer
	f *fakeDirector
}

func (t transfers) ResultsOffset(ctx context.Context, req *transferspb.ResultsOffsetRequest) (*transferspb.ResultsOffsetResponse, error) {
	return t.f.ResultsOffset(ctx, req)
}

// aggregator adapts the fake to the Aggregator service.
type aggregator struct {
	aggregatorpb.UnimplementedAggregatorServer
	f *fakeDirector
}

func (a aggregator) GetTasks(ctx context.Context, req *aggregatorpb.GetTasksRequest) (*aggregatorpb.GetTasksResponse, error) {
	return a.f.GetTasks(ctx, req)
}

func (a aggregator) GetAggregatedTensor(ctx context.Context, req *aggregatorpb.GetAggregatedTensorRequest) (*aggregatorpb.GetAggregatedTensorResponse, error) {
	return a.f.GetAggregatedTensor(ctx, req)
}

func (a aggregator) SendLocalTaskResults(stream grpc.ClientStreamingServer[basepb.DataStream, aggregatorpb.SendLocalTaskResultsResponse]) error {
	return a.f.SendLocalTaskResults(stream)
}

// director adapts the fake to the Director service.
type director struct {
	directorpb.UnimplementedDirectorServer
	f *fakeDirector
}

func (d director) UpdateShardInfo(ctx context.Context, req *directorpb.UpdateShardInfoRequest) (*directorpb.UpdateShardInfoResponse, error) {
	return d.f.UpdateShardInfo(ctx, req)
}

func (d director) UpdateEnvoyStatus(ctx context.Context, req *directorpb.UpdateEnvoyStatusRequest) (*directorpb.UpdateEnvoyStatusResponse, error) {
	return d.f.UpdateEnvoyStatus(ctx, req)
}

func (d director) WaitExperiment(ctx context.Context, req *directorpb.WaitExperimentRequest) (*directorpb.WaitExperimentResponse, error) {
	return d.f.WaitExperiment(ctx, req)
}

func (d director) GetExperimentData(req *directorpb.GetExperimentDataRequest, stream grpc.ServerStreamingServer[directorpb.ExperimentData]) error {
	return d.f.GetExperimentData(req, stream)
}

func (d director) SetExperimentFailed(ctx context.Context, req *directorpb.SetExperimentFailedRequest) (*directorpb.SetExperimentFailedResponse, error) {
	return d.f.SetExperimentFailed(ctx, req)
}

// bufTarget is the gRPC target the test envoys dial.
const bufTarget = "passthrough:///bufnet"

// mustServe serves f on an in-memory listener until the test ends and
// returns the dial option that reaches it.
func mustServe(tb testing.TB, f *fakeDirector) grpc.DialOption {
	tb.Helper()
	lis := bufconn.Listen(1 << 20)
	s := grpc.NewServer(grpc.MaxRecvMsgSize(api.MaxMessageSize), grpc.MaxSendMsgSize(api.MaxMessageSize))
	directorpb.RegisterDirectorServer(s, director{f: f})
	aggregatorpb.RegisterAggregatorServer(s, aggregator{f: f})
	transferspb.RegisterTransfersServer(s, transfers{f: f})
	go s.Serve(lis)
	tb.Cleanup(s.Stop)
	return grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
		return lis.DialContext(ctx)
	})
}

// testLogger logs to the test's output.
func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// mustEnvoy returns an envoy named "site-1" that talks to f, its config
// changed by opts.
func mustEnvoy(tb testing.TB, f *fakeDirector, samples uint64, opts ...func(*Config)) *Envoy {
	tb.Helper()
	cfg := Config{
		Name:        "site-1",
		Directors:   []string{bufTarget},
		ShardDir:    tb.TempDir(),
		WorkDir:     filepath.Join(tb.TempDir(), "work"),
		Samples:     samples,
		SampleShape: []string{"28", "28"},
		TargetShape: []string{"1"},
		KillGrace:   time.Second,
		AllowRoot:   true, // tests run as root on CI
		DialOptions: []grpc.DialOption{mustServe(tb, f)},
		Logger:      testLogger(tb),
	}
	for _, o := range opts {
		o(&cfg)
	}
	e, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return e
}

// mustConnect sets e's clients without Run, for tests of its parts.
func mustConnect(tb testing.TB, e *Envoy) {
	tb.Helper()
	conn, err := e.dial()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	e.dirc = directorpb.NewDirectorClient(conn)
	e.aggc = aggregatorpb.NewAggregatorClient(conn)
	e.xfrc = transferspb.NewTransfersClient(conn)
}

// startRun runs e until the test ends or stop is called. stop cancels Run
// and returns its error; done is closed when Run has returned by itself or
// otherwise, after which stop returns at once.
func startRun(tb testing.TB, e *Envoy) (stop func() error, done <-chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan struct{})
	var err error
	go func() {
		defer close(ch)
		err = e.Run(ctx)
	}()
	stop = func() error {
		cancel()
		<-ch
		return err
	}
	tb.Cleanup(func() { stop() })
	return stop, ch
}

// eventually waits up to 20 s for cond, failing the test with what if it
// never holds.
func eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// testModel is the job's initial model: two small float32 tensors.
var (
	testTensors = map[string][]float32{"bias": {0.5, -1}, "weight": {1, 2, 3, 4, 5, 6}}
	testShapes  = map[string][]int64{"bias": {2}, "weight": {2, 3}}
)

// mustJob creates a job folder with job.json (rounds, command), the test
// model and extra files (name -> shell script, made executable), and
// returns its zip archive.
func mustJob(tb testing.TB, command []string, scripts map[string]string) []byte {
	tb.Helper()
	dir := tb.TempDir()
	manifest, err := json.Marshal(map[string]any{
		"name":       "test job",
		"min_envoys": 1,
		"rounds":     1,
		"train":      map[string]any{"command": command, "timeout": "30s"},
	})
	if err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, job.ManifestFile), manifest, 0o644); err != nil {
		tb.Fatal(err)
	}
	var model bytes.Buffer
	if err := tensor.WriteFloat32Safetensors(&model, testTensors, testShapes); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, job.ModelFile), model.Bytes(), 0o644); err != nil {
		tb.Fatal(err)
	}
	for name, body := range scripts {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(body), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.Chmod(path, 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	a, err := job.NewArchive(dir)
	if err != nil {
		tb.Fatal(err)
	}
	var zip bytes.Buffer
	if _, err := a.WriteTo(&zip); err != nil {
		tb.Fatal(err)
	}
	return zip.Bytes()
}

// serveArchive returns a GetExperimentData hook that announces size and
// sum and sends chunks.
func serveArchive(size int64, sum string, chunks []*directorpb.ExperimentData) func(*directorpb.GetExperimentDataRequest, grpc.ServerStreamingServer[directorpb.ExperimentData]) error {
	return func(_ *directorpb.GetExperimentDataRequest, stream grpc.ServerStreamingServer[directorpb.ExperimentData]) error {
		if err := stream.SendHeader(metadata.Pairs(api.MDArchiveSize, strconv.FormatInt(size, 10), api.MDArchiveSHA256, sum)); err != nil {
			return err
		}
		for _, c := range chunks {
			if err := stream.Send(c); err != nil {
				return err
			}
		}
		return nil
	}
}

// chunked cuts b into well-formed chunks of n bytes.
func chunked(b []byte, n int) []*directorpb.ExperimentData {
	var out []*directorpb.ExperimentData
	for len(b) > 0 {
		k := min(n, len(b))
		out = append(out, &directorpb.ExperimentData{Size: uint32(k), Npbytes: b[:k]})
		b = b[k:]
	}
	return out
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// serveModel is a GetAggregatedTensor hook that answers with the test model.
func serveModel(_ context.Context, req *aggregatorpb.GetAggregatedTensorRequest) (*aggregatorpb.GetAggregatedTensorResponse, error) {
	name := req.GetTensorName()
	data, ok := testTensors[name]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "no tensor %q", name)
	}
	s := tensor.Span{Name: name, DType: tensor.F32, Shape: testShapes[name], Size: 4 * int64(len(data))}
	return &aggregatorpb.GetAggregatedTensorResponse{
		RoundNumber: req.GetRoundNumber(),
		Tensor:      tensor.NamedTensor(s, float32Bytes(data), nil, false),
	}, nil
}

// float32Bytes encodes v little-endian.
func float32Bytes(v []float32) []byte {
	b := make([]byte, 0, 4*len(v))
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b
}

// readResults reads a SendLocalTaskResults stream whole and parses it.
func readResults(stream grpc.ClientStreamingServer[basepb.DataStream, aggregatorpb.SendLocalTaskResultsResponse]) (*tensor.TaskResults, []byte, error) {
	var buf []byte
	for {
		c, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, err
		}
		if int(c.GetSize()) != len(c.GetNpbytes()) {
			return nil, nil, status.Error(codes.InvalidArgument, "broken chunk")
		}
		buf = append(buf, c.GetNpbytes()...)
	}
	tr, err := tensor.ReadTaskResults(bytes.NewReader(buf), int64(len(buf)))
	if err != nil {
		return nil, nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return tr, buf, stream.SendAndClose(&aggregatorpb.SendLocalTaskResultsResponse{})
}
