package envoy

import (
	"bytes"
	"context"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/aggregatorpb"
	"github.com/fedplane/fedplane/api/basepb"
	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/tensor"
)

const testID = "3f2b8c1e-5a7d-4e9b-8c6f-1d2e3f4a5b6c"

// flow is a fake director running one experiment of one round with one
// envoy, recording what the envoy does.
type flow struct {
	*fakeDirector
	tb testing.TB

	mu        sync.Mutex
	sleepOnce bool // answer the first GetTasks with sleep_time 1
	stop      bool // name the experiment in fedplane-stop
	running   []bool
	results   *tensor.TaskResults
	failed    *directorpb.SetExperimentFailedRequest
	sendCode  codes.Code // answer SendLocalTaskResults with this after reading it
	problems  []string
}

func (fl *flow) problem(format string) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	fl.problems = append(fl.problems, format)
}

// newFlow serves archive as experiment testID.
func newFlow(tb testing.TB, archive []byte) *flow {
	fl := &flow{fakeDirector: &fakeDirector{}, tb: tb}
	f := fl.fakeDirector
	f.updateEnvoyStatus = func(ctx context.Context, req *directorpb.UpdateEnvoyStatusRequest) (*directorpb.UpdateEnvoyStatusResponse, error) {
		fl.mu.Lock()
		defer fl.mu.Unlock()
		fl.running = append(fl.running, req.GetIsExperimentRunning())
		if fl.stop && req.GetIsExperimentRunning() {
			grpc.SetHeader(ctx, metadata.Pairs(api.MDStop, "other-experiment", api.MDStop, testID))
		}
		return &directorpb.UpdateEnvoyStatusResponse{HealthCheckPeriod: fastPeriod}, nil
	}
	f.waitExperiment = func(ctx context.Context, req *directorpb.WaitExperimentRequest) (*directorpb.WaitExperimentResponse, error) {
		if req.GetCollaboratorName() != "site-1" {
			fl.problem("WaitExperiment: wrong collaborator_name " + req.GetCollaboratorName())
		}
		if f.called("WaitExperiment") == 1 {
			return &directorpb.WaitExperimentResponse{ExperimentName: testID}, nil
		}
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	serve := serveArchive(int64(len(archive)), sha256Hex(archive), chunked(archive, 100))
	f.getExperimentData = func(req *directorpb.GetExperimentDataRequest, stream grpc.ServerStreamingServer[directorpb.ExperimentData]) error {
		if req.GetExperimentName() != testID || req.GetCollaboratorName() != "site-1" {
			fl.problem("GetExperimentData: wrong request " + req.String())
		}
		return serve(req, stream)
	}
	f.getTasks = func(ctx context.Context, req *aggregatorpb.GetTasksRequest) (*aggregatorpb.GetTasksResponse, error) {
		fl.checkHeader(ctx, "GetTasks", req.GetHeader())
		fl.mu.Lock()
		defer fl.mu.Unlock()
		switch {
		case fl.results != nil || fl.failed != nil:
			return &aggregatorpb.GetTasksResponse{Quit: true}, nil
		case fl.sleepOnce:
			fl.sleepOnce = false
			return &aggregatorpb.GetTasksResponse{SleepTime: 1}, nil
		}
		return &aggregatorpb.GetTasksResponse{
			RoundNumber: 0,
			Tasks:       []*aggregatorpb.Task{{Name: taskTrain, FunctionName: taskTrain}},
		}, nil
	}
	f.getAggregatedTensor = func(ctx context.Context, req *aggregatorpb.GetAggregatedTensorRequest) (*aggregatorpb.GetAggregatedTensorResponse, error) {
		fl.checkHeader(ctx, "GetAggregatedTensor", req.GetHeader())
		if req.GetRoundNumber() != 0 || req.GetReport() || !slices.Equal(req.GetTags(), []string{"model"}) || !req.GetRequireLossless() {
			fl.problem("GetAggregatedTensor: wrong request " + req.String())
		}
		return serveModel(ctx, req)
	}
	f.sendLocalTaskResults = func(stream grpc.ClientStreamingServer[basepb.DataStream, aggregatorpb.SendLocalTaskResultsResponse]) error {
		tr, _, err := readResults(stream)
		if err != nil {
			fl.problem("SendLocalTaskResults: " + err.Error())
			return err
		}
		fl.mu.Lock()
		defer fl.mu.Unlock()
		fl.results = tr
		if fl.sendCode != codes.OK {
			return status.Error(fl.sendCode, "as told")
		}
		return nil
	}
	f.setExperimentFailed = func(_ context.Context, req *directorpb.SetExperimentFailedRequest) (*directorpb.SetExperimentFailedResponse, error) {
		fl.mu.Lock()
		defer fl.mu.Unlock()
		fl.failed = req
		return &directorpb.SetExperimentFailedResponse{}, nil
	}
	return fl
}

func (fl *flow) checkHeader(ctx context.Context, rpc string, h *aggregatorpb.MessageHeader) {
	if h.GetSender() != "site-1" || h.GetReceiver() != "director" || h.GetFederationUuid() != testID {
		fl.problem(rpc + ": wrong header " + h.String())
	}
	md, _ := metadata.FromIncomingContext(ctx)
	if got := md.Get("client_id"); !slices.Equal(got, []string{"site-1"}) {
		fl.problem(rpc + ": client_id " + strings.Join(got, ","))
	}
}

// idleAgain waits until the envoy reports no experiment running after it
// reported one.
func (fl *flow) idleAgain(tb testing.TB) {
	tb.Helper()
	eventually(tb, "the envoy to report running and then idle", func() bool {
		fl.mu.Lock()
		defer fl.mu.Unlock()
		i := slices.Index(fl.running, true)
		return i >= 0 && !fl.running[len(fl.running)-1]
	})
}

// finished waits until the envoy is done with the experiment: it waits for
// the next one.
func (fl *flow) finished(tb testing.TB) {
	tb.Helper()
	eventually(tb, "the envoy to wait for the next experiment", func() bool { return fl.called("WaitExperiment") >= 2 })
}

func (fl *flow) check(tb testing.TB) {
	tb.Helper()
	fl.mu.Lock()
	defer fl.mu.Unlock()
	for _, p := range fl.problems {
		tb.Error(p)
	}
}

// checkCleaned checks that only the logs are left of the experiment.
func checkCleaned(tb testing.TB, e *Envoy) {
	tb.Helper()
	dir := filepath.Join(e.cfg.WorkDir, testID)
	entries, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	var names []string
	for _, d := range entries {
		names = append(names, d.Name())
	}
	if !slices.Equal(names, []string{logsDirName}) {
		tb.Errorf("experiment folder holds %v, want only %s", names, logsDirName)
	}
}

const trainScript = `#!/bin/sh
set -e
echo "round=$FEDPLANE_ROUND envoy=$FEDPLANE_ENVOY experiment=$FEDPLANE_EXPERIMENT samples=$FEDPLANE_SAMPLES data=$FEDPLANE_DATA"
echo "cwd=$(pwd)"
cp "$FEDPLANE_INPUT_MODEL" "$FEDPLANE_OUTPUT_MODEL"
printf '{"name": "loss", "value": 0.25}\n\n{"name": "n_samples", "value": 42}\n' > "$FEDPLANE_METRICS"
echo "training done" >&2
`

func TestExperimentRound(t *testing.T) {
	for _, code := range []codes.Code{codes.OK, codes.AlreadyExists} {
		t.Run(code.String(), func(t *testing.T) {
			fl := newFlow(t, mustJob(t, []string{"./train.sh"}, map[string]string{"train.sh": trainScript}))
			fl.sleepOnce = true
			fl.sendCode = code
			e := mustEnvoy(t, fl.fakeDirector, 600)
			stop, _ := startRun(t, e)
			fl.finished(t)
			fl.idleAgain(t) // the sleep_time keeps it running for a heartbeat to see
			if err := stop(); err != nil {
				t.Fatalf("Run = %v", err)
			}
			fl.check(t)

			fl.mu.Lock()
			defer fl.mu.Unlock()
			if fl.failed != nil {
				t.Fatalf("experiment failed: %v", fl.failed)
			}
			tr := fl.results
			if tr == nil {
				t.Fatal("no results received")
			}
			wantHeader := tensor.TaskResultsHeader{Sender: "site-1", Receiver: "director", FederationUUID: testID, Round: 0, TaskName: "train", DataSize: 42}
			if tr.Header != wantHeader {
				t.Errorf("results header %+v, want %+v", tr.Header, wantHeader)
			}
			wantMetrics := []tensor.Metric{{Name: "loss", Value: 0.25}, {Name: "n_samples", Value: 42}}
			if !reflect.DeepEqual(tr.Metrics, wantMetrics) {
				t.Errorf("metrics %v, want %v", tr.Metrics, wantMetrics)
			}
			for name, want := range testTensors {
				got, err := tr.Model.Float32s(name)
				if err != nil || !slices.Equal(got, want) {
					t.Errorf("trained tensor %q = %v, %v; want %v", name, got, err, want)
				}
			}
			// After quit: nothing but the logs, which say what ran.
			checkCleaned(t, e)
			log, err := os.ReadFile(filepath.Join(e.cfg.WorkDir, testID, logsDirName, trainLogName))
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{
				"round=0 envoy=site-1 experiment=" + testID + " samples=600 data=" + e.cfg.ShardDir + "\n",
				"cwd=" + filepath.Join(e.cfg.WorkDir, testID, jobDirName) + "\n",
				"training done\n",
			} {
				if !bytes.Contains(log, []byte(want)) {
					t.Errorf("log %q lacks %q", log, want)
				}
			}
			if n := fl.called("SetExperimentFailed"); n != 0 {
				t.Errorf("SetExperimentFailed called %d times", n)
			}
		})
	}
}

func TestExperimentFailures(t *testing.T) {
	var badLayout bytes.Buffer
	if err := tensor.WriteFloat32Safetensors(&badLayout, map[string][]float32{"bias": {1, 2, 3}, "weight": {1, 2, 3, 4, 5, 6}}, map[string][]int64{"weight": {2, 3}}); err != nil {
		t.Fatal(err)
	}
	var nanModel bytes.Buffer
	if err := tensor.WriteFloat32Safetensors(&nanModel, map[string][]float32{"bias": {0.5, -1}, "weight": {1, 2, 3, 4, float32(math.NaN()), 6}}, testShapes); err != nil {
		t.Fatal(err)
	}
	var infModel bytes.Buffer
	if err := tensor.WriteFloat32Safetensors(&infModel, map[string][]float32{"bias": {float32(math.Inf(-1)), -1}, "weight": {1, 2, 3, 4, 5, 6}}, testShapes); err != nil {
		t.Fatal(err)
	}
	copyModel := `cp "$FEDPLANE_INPUT_MODEL" "$FEDPLANE_OUTPUT_MODEL"; `
	tests := []struct {
		name     string
		command  []string
		files    map[string]string
		cfg      func(*Config) // changes to the envoy's config
		wantCode uint32
		wantDesc string // the whole description, or its start when it ends in "..."
	}{
		{
			name:     "exit status",
			command:  []string{"sh", "-c", "echo starting; echo boom >&2; exit 3"},
			wantCode: 3,
			wantDesc: "training command exited with status 3 in round 0; stderr tail:\nboom\n",
		},
		{
			name:     "exit status, stderr withheld",
			command:  []string{"sh", "-c", "echo boom >&2; exit 3"},
			cfg:      func(c *Config) { c.WithholdStderr = true },
			wantCode: 3,
			wantDesc: "training command exited with status 3 in round 0 (details withheld by the site)",
		},
		{
			name:     "site paths redacted",
			command:  []string{"sh", "-c", `echo "no $FEDPLANE_DATA/x.csv, $FEDPLANE_OUTPUT_MODEL, $HOME, $(pwd)." >&2; exit 2`},
			wantCode: 2,
			wantDesc: "training command exited with status 2 in round 0; stderr tail:\nno <shard>/x.csv, <workspace>/round-0/output.safetensors, <workspace>/home, <workspace>/job.\n",
		},
		{
			name:     "missing output model",
			command:  []string{"true"},
			wantCode: 1,
			wantDesc: "training command wrote no output model in round 0 (FEDPLANE_OUTPUT_MODEL=<workspace>/round-0/output.safetensors)",
		},
		{
			name:     "NaN in output model",
			command:  []string{"sh", "-c", `cp nan.safetensors "$FEDPLANE_OUTPUT_MODEL"`},
			files:    map[string]string{"nan.safetensors": nanModel.String()},
			wantCode: 1,
			wantDesc: `output model of round 0 refused: tensor "weight": element 4 [1 1] is NaN: not a finite number`,
		},
		{
			name:     "-Inf in output model",
			command:  []string{"sh", "-c", `cp inf.safetensors "$FEDPLANE_OUTPUT_MODEL"`},
			files:    map[string]string{"inf.safetensors": infModel.String()},
			wantCode: 1,
			wantDesc: `output model of round 0 refused: tensor "bias": element 0 is -Inf: not a finite number`,
		},
		{
			name:     "output model is a link",
			command:  []string{"sh", "-c", `ln -s "$FEDPLANE_INPUT_MODEL" "$FEDPLANE_OUTPUT_MODEL"`},
			wantCode: 1,
			wantDesc: "malformed output model in round 0: <workspace>/round-0/output.safetensors is a symbolic link; want a regular file",
		},
		{
			name:     "metrics file is a named pipe",
			command:  []string{"sh", "-c", copyModel + `mkfifo "$FEDPLANE_METRICS"`},
			wantCode: 1,
			wantDesc: "bad metrics in round 0: metrics: <workspace>/round-0/metrics.jsonl is a named pipe; want a regular file",
		},
		{
			name:     "malformed output model",
			command:  []string{"sh", "-c", `echo garbage > "$FEDPLANE_OUTPUT_MODEL"`},
			wantCode: 1,
			wantDesc: "malformed output model in round 0: ...",
		},
		{
			name:     "output layout differs",
			command:  []string{"sh", "-c", `cp bad.safetensors "$FEDPLANE_OUTPUT_MODEL"`},
			files:    map[string]string{"bad.safetensors": badLayout.String()},
			wantCode: 1,
			wantDesc: `output model of round 0 differs from the job's model: tensor "bias": shape [3] differs from the model's [2]`,
		},
		{
			name:     "malformed metrics line",
			command:  []string{"sh", "-c", copyModel + `printf '{"name": "loss", "value": 1}\nloss=2\n' > "$FEDPLANE_METRICS"`},
			wantCode: 1,
			wantDesc: `bad metrics in round 0: metrics line 2: want a JSON object like {"name": "loss", "value": 0.5}, got "loss=2"`,
		},
		{
			name:     "malformed metrics line withheld",
			command:  []string{"sh", "-c", copyModel + `printf 'password=hunter2\n' > "$FEDPLANE_METRICS"`},
			cfg:      func(c *Config) { c.WithholdStderr = true },
			wantCode: 1,
			wantDesc: `bad metrics in round 0 (details withheld by the site)`,
		},
		{
			name:     "n_samples zero",
			command:  []string{"sh", "-c", copyModel + `echo '{"name": "n_samples", "value": 0}' > "$FEDPLANE_METRICS"`},
			wantCode: 1,
			wantDesc: "bad metrics in round 0: metric n_samples is 0: want a whole number from 1 to 2147483647",
		},
		{
			name:     "no n_samples and no shard samples",
			command:  []string{"sh", "-c", copyModel},
			cfg:      func(c *Config) { c.Samples = 0 },
			wantCode: 1,
			wantDesc: "bad metrics in round 0: the training command reported no n_samples metric and the shard's sample count is 0: a result must weigh at least one sample",
		},
		{
			name:     "bad n_samples",
			command:  []string{"sh", "-c", copyModel + `echo '{"name": "n_samples", "value": -5}' > "$FEDPLANE_METRICS"`},
			wantCode: 1,
			wantDesc: "bad metrics in round 0: metric n_samples is -5: want a whole number from 1 to 2147483647",
		},
		{
			name:     "program not found",
			command:  []string{"./no-such-program"},
			wantCode: 1,
			wantDesc: "round 0: start training command: ...",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fl := newFlow(t, mustJob(t, tt.command, tt.files))
			var opts []func(*Config)
			if tt.cfg != nil {
				opts = append(opts, tt.cfg)
			}
			e := mustEnvoy(t, fl.fakeDirector, 600, opts...)
			stop, _ := startRun(t, e)
			fl.finished(t)
			if err := stop(); err != nil {
				t.Fatalf("Run = %v", err)
			}
			fl.check(t)
			fl.mu.Lock()
			defer fl.mu.Unlock()
			req := fl.failed
			if req == nil {
				t.Fatal("SetExperimentFailed not called")
			}
			if req.GetExperimentName() != testID || req.GetCollaboratorName() != "site-1" {
				t.Errorf("SetExperimentFailed for %q by %q", req.GetExperimentName(), req.GetCollaboratorName())
			}
			if req.GetErrorCode() != tt.wantCode {
				t.Errorf("error_code %d, want %d", req.GetErrorCode(), tt.wantCode)
			}
			desc := req.GetErrorDescription()
			if prefix, ok := strings.CutSuffix(tt.wantDesc, "..."); ok {
				if !strings.HasPrefix(desc, prefix) {
					t.Errorf("error_description %q, want it to start with %q", desc, prefix)
				}
			} else if desc != tt.wantDesc {
				t.Errorf("error_description %q, want %q", desc, tt.wantDesc)
			}
			if fl.results != nil {
				t.Error("results sent for a failed round")
			}
			if n := fl.called("GetTasks"); n != 1 {
				t.Errorf("GetTasks called %d times, want 1: a failed experiment is over", n)
			}
			checkCleaned(t, e)
		})
	}
}

// startedScript records its process group and trains forever.
const startedScript = `echo $$ > "$FEDPLANE_DATA/pgid"; sleep 100 & sleep 100`

// waitStarted waits for startedScript to run and returns its group.
func waitStarted(tb testing.TB, e *Envoy) int {
	tb.Helper()
	path := filepath.Join(e.cfg.ShardDir, "pgid")
	eventually(tb, "the training command to start", func() bool {
		b, err := os.ReadFile(path)
		return err == nil && bytes.HasSuffix(b, []byte("\n"))
	})
	c := &command{Dir: e.cfg.ShardDir}
	return readPgid(tb, c)
}

func TestExperimentStoppedByDirector(t *testing.T) {
	fl := newFlow(t, mustJob(t, []string{"sh", "-c", startedScript}, nil))
	e := mustEnvoy(t, fl.fakeDirector, 600)
	stop, _ := startRun(t, e)
	pgid := waitStarted(t, e)
	fl.mu.Lock()
	fl.stop = true
	fl.mu.Unlock()
	fl.idleAgain(t)
	// Idle means the command is gone and the workspace clean.
	checkGroupGone(t, pgid)
	checkCleaned(t, e)
	if err := stop(); err != nil {
		t.Fatalf("Run = %v", err)
	}
	fl.check(t)
	if n := fl.called("SetExperimentFailed"); n != 0 {
		t.Errorf("SetExperimentFailed called %d times for a stopped experiment", n)
	}
}

func TestShutdownDuringTraining(t *testing.T) {
	fl := newFlow(t, mustJob(t, []string{"sh", "-c", startedScript}, nil))
	e := mustEnvoy(t, fl.fakeDirector, 600)
	stop, _ := startRun(t, e)
	pgid := waitStarted(t, e)
	if err := stop(); err != nil {
		t.Fatalf("Run = %v, want nil on shutdown", err)
	}
	checkGroupGone(t, pgid)
	checkCleaned(t, e)
	if e.running() {
		t.Error("envoy still counts an experiment as running after Run returned")
	}
	fl.check(t)
	if n := fl.called("SetExperimentFailed"); n != 0 {
		t.Errorf("SetExperimentFailed called %d times on shutdown", n)
	}
}

// TestExperimentDirectorErrors checks which director errors end the
// envoy's part silently (the director has ended the experiment or does not
// know it) and which it reports, so that the director does not wait for an
// envoy that gave up.
func TestExperimentDirectorErrors(t *testing.T) {
	tests := []struct {
		code       codes.Code
		wantReport bool
	}{
		{codes.FailedPrecondition, false},
		{codes.NotFound, false},
		{codes.InvalidArgument, true},
		{codes.PermissionDenied, true},
		{codes.ResourceExhausted, true},
		{codes.Internal, true},
	}
	for _, tt := range tests {
		t.Run(tt.code.String(), func(t *testing.T) {
			fl := newFlow(t, mustJob(t, []string{"true"}, nil))
			fl.getTasks = func(context.Context, *aggregatorpb.GetTasksRequest) (*aggregatorpb.GetTasksResponse, error) {
				return nil, status.Error(tt.code, "as told")
			}
			e := mustEnvoy(t, fl.fakeDirector, 600)
			stop, _ := startRun(t, e)
			fl.finished(t)
			if err := stop(); err != nil {
				t.Fatalf("Run = %v", err)
			}
			checkCleaned(t, e)
			fl.mu.Lock()
			defer fl.mu.Unlock()
			switch {
			case !tt.wantReport && fl.failed != nil:
				t.Errorf("SetExperimentFailed(%v) for an experiment the director ended", fl.failed)
			case tt.wantReport && fl.failed == nil:
				t.Error("SetExperimentFailed not called: the director would wait for this envoy")
			case tt.wantReport:
				if want := "code = " + tt.code.String() + " desc = as told"; !strings.Contains(fl.failed.GetErrorDescription(), want) {
					t.Errorf("error_description %q lacks %q", fl.failed.GetErrorDescription(), want)
				}
			}
		})
	}
}
