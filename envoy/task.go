package envoy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/aggregatorpb"
	"github.com/fedplane/fedplane/job"
	"github.com/fedplane/fedplane/tensor"
)

const (
	// taskTrain is the one task of fedplane's rounds.
	taskTrain = "train"
	// maxSleep caps the pause a GetTasks reply asks for.
	maxSleep = 60 * time.Second
	// idlePause is the pause after a GetTasks reply with neither tasks nor
	// sleep_time nor quit.
	idlePause = time.Second
	// getTasksTimeout bounds one GetTasks call, which the director answers
	// at once. Model transfers have no deadline: they may take long.
	getTasksTimeout = time.Minute
	// codeTimeout is SetExperimentFailed's error_code for a training
	// command that ran out of time, as timeout(1) exits.
	codeTimeout = 124
)

// Files of a round's folder, <work-dir>/<id>/round-<r>.
const (
	inputModelName  = "input.safetensors"
	outputModelName = "output.safetensors"
	metricsName     = "metrics.jsonl"
	// pgidFile records a running training command's process group.
	pgidFile = "train.pgid"
)

// Folders of an experiment's folder that belong to its training runs: their
// HOME and TMPDIR.
const (
	homeDirName = "home"
	tmpDirName  = "tmp"
)

const (
	// defaultPath is the training command's PATH when the envoy has none.
	defaultPath = "/usr/local/bin:/usr/bin:/bin"
	// defaultLang is its LANG when the envoy has none.
	defaultLang = "C.UTF-8"
)

// participate fetches the experiment's job and runs its rounds until the
// director says the experiment is over.
func (e *Envoy) participate(ctx context.Context, x *experiment) error {
	if err := os.MkdirAll(filepath.Join(x.dir, logsDirName), 0o700); err != nil {
		return fmt.Errorf("experiment folder: %w", err)
	}
	j, err := e.fetch(ctx, x)
	if err != nil {
		return err
	}
	model, f, err := tensor.OpenSafetensors(filepath.Join(j.dir, job.ModelFile))
	if err != nil {
		return fmt.Errorf("job model: %w", err)
	}
	defer f.Close()
	if err := e.prepare(x, j); err != nil {
		return err
	}
	x.log.Info("job unpacked", api.LogTensors, len(model.Tensors), api.LogJobName, j.manifest.Name)
	return e.rounds(ctx, x, j, model)
}

// prepare makes the training runs' home and temp dir and, when training runs
// as another user, hands them and the job folder to that user and lets it
// enter the experiment's folder (to reach them), not list it.
func (e *Envoy) prepare(x *experiment, j *fetched) error {
	dirs := []string{filepath.Join(x.dir, homeDirName), filepath.Join(x.dir, tmpDirName)}
	for _, d := range dirs {
		if err := os.RemoveAll(d); err != nil {
			return fmt.Errorf("workspace: %w", err)
		}
		if err := os.Mkdir(d, 0o700); err != nil {
			return fmt.Errorf("workspace: %w", err)
		}
	}
	if e.runAs == nil {
		return nil
	}
	for _, d := range append(dirs, j.dir) {
		if err := e.runAs.handOver(d); err != nil {
			return fmt.Errorf("workspace: hand over to user %s: %w", e.runAs, err)
		}
	}
	if err := os.Chmod(x.dir, 0o711); err != nil {
		return fmt.Errorf("workspace: %w", err)
	}
	return nil
}

// header is the MessageHeader of everything sent for experiment id.
func (e *Envoy) header(id string) *aggregatorpb.MessageHeader {
	return &aggregatorpb.MessageHeader{Sender: e.cfg.Name, Receiver: directorName, FederationUuid: id}
}

// rounds asks the director for tasks and runs them until it says quit.
func (e *Envoy) rounds(ctx context.Context, x *experiment, j *fetched, model *tensor.Index) error {
	req := &aggregatorpb.GetTasksRequest{Header: e.header(x.id)}
	for {
		var resp *aggregatorpb.GetTasksResponse
		err := retry(ctx, x.log, "GetTasks", func(ctx context.Context) error {
			ctx, cancel := context.WithTimeout(ctx, getTasksTimeout)
			defer cancel()
			var err error
			resp, err = e.aggc.GetTasks(ctx, req)
			return err
		})
		if err != nil {
			return err
		}
		switch {
		case resp.GetQuit():
			x.log.Info("director says the experiment is over")
			return nil
		case resp.GetSleepTime() > 0:
			d := min(time.Duration(resp.GetSleepTime())*time.Second, maxSleep)
			x.log.Debug("director says wait", api.LogSleep, d)
			if !sleep(ctx, d) {
				return ctx.Err()
			}
			continue
		case len(resp.GetTasks()) == 0:
			x.log.Warn("director sent no task, no sleep time and no quit; asking again", api.LogRetryIn, idlePause)
			if !sleep(ctx, idlePause) {
				return ctx.Err()
			}
			continue
		}
		for _, t := range resp.GetTasks() {
			if t.GetName() != taskTrain && t.GetFunctionName() != taskTrain {
				return fmt.Errorf("director asked for task %q (function %q); this envoy runs only %q", t.GetName(), t.GetFunctionName(), taskTrain)
			}
		}
		if err := e.round(ctx, x, j, model, resp.GetRoundNumber()); err != nil {
			return err
		}
	}
}

// round runs the train task of round r: global model in, training command,
// trained model and metrics out.
func (e *Envoy) round(ctx context.Context, x *experiment, j *fetched, model *tensor.Index, r int32) error {
	if r < 0 {
		return fmt.Errorf("director asked for round %d", r)
	}
	log := x.log.With(api.LogRound, r)
	start := time.Now()
	dir := filepath.Join(x.dir, roundPrefix+strconv.Itoa(int(r)))
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("round folder: %w", err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return fmt.Errorf("round folder: %w", err)
	}
	input := filepath.Join(dir, inputModelName)
	if err := e.downloadModel(ctx, x, r, model, input); err != nil {
		return err
	}
	if e.runAs != nil {
		if err := e.runAs.handOver(dir); err != nil {
			return fmt.Errorf("round folder: hand over to user %s: %w", e.runAs, err)
		}
	}

	output := filepath.Join(dir, outputModelName)
	metricsPath := filepath.Join(dir, metricsName)
	c := &command{
		Argv:     e.argv(j),
		Dir:      j.dir,
		Env:      e.environ(x, r, input, output, metricsPath),
		LogPath:  filepath.Join(x.dir, logsDirName, trainLogName),
		PgidPath: filepath.Join(x.dir, pgidFile),
		Timeout:  time.Duration(j.manifest.Train.Timeout),
		Grace:    e.cfg.KillGrace,
		Cred:     e.credential(),
	}
	if e.sandbox != nil {
		v := view{
			workDir:  e.cfg.WorkDir,
			jobDir:   j.dir,
			writable: []string{dir, filepath.Join(x.dir, homeDirName), filepath.Join(x.dir, tmpDirName)},
			shard:    e.cfg.ShardDir,
			secrets:  e.hiddenSecrets(),
		}
		c.Wrap = v.argv(e.sandbox)
	}
	if c.Timeout <= 0 {
		c.Timeout = job.DefaultTrainTimeout
	}
	log.Info("training", api.LogLog, c.LogPath)
	trainStart := time.Now()
	tail, err := c.run(ctx)
	e.prom.trainingRun(taskTrain, outcome(err, ctx.Err() != nil), time.Since(trainStart))
	e.queueLog(x.id)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err := trainingError(r, tail, err); err != nil {
		return err
	}
	log.Info("training done", api.LogTook, time.Since(trainStart).Round(time.Millisecond))

	f, fi, err := openProduced(output, e.runAs)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("training command wrote no output model in round %d (FEDPLANE_OUTPUT_MODEL=%s)", r, output)
	}
	if err != nil {
		return &failure{code: codeFailed, kind: FailureOutput, err: fmt.Errorf("malformed output model in round %d", r), said: ": " + err.Error()}
	}
	defer f.Close()
	trained, _, err := tensor.ReadSafetensors(f, fi.Size())
	if err != nil {
		return &failure{code: codeFailed, kind: FailureOutput, err: fmt.Errorf("malformed output model in round %d", r), said: ": " + err.Error()}
	}
	if err := tensor.SameLayout(trained, model); err != nil {
		return fmt.Errorf("output model of round %d differs from the job's model: %w", r, err)
	}
	if err := tensor.CheckFinite(trained); err != nil {
		return fmt.Errorf("output model of round %d refused: %w", r, err)
	}
	ms, err := readMetrics(metricsPath, e.runAs)
	if err != nil {
		return &failure{code: codeFailed, kind: FailureOutput, err: fmt.Errorf("bad metrics in round %d", r), said: ": " + err.Error()}
	}
	ds, err := dataSize(ms, e.cfg.Samples)
	if err != nil {
		return fmt.Errorf("bad metrics in round %d: %w", r, err)
	}
	h := tensor.TaskResultsHeader{
		Sender:         e.cfg.Name,
		Receiver:       directorName,
		FederationUUID: x.id,
		Round:          r,
		TaskName:       taskTrain,
		DataSize:       ds,
	}
	if err := e.sendResults(ctx, x, h, trained, wireMetrics(ms)); err != nil {
		return err
	}
	log.Info("round done", api.LogDataSize, ds, api.LogMetrics, len(ms), api.LogTook, time.Since(start).Round(time.Millisecond))
	f.Close()
	// The results are the director's now; only the log stays.
	if err := os.RemoveAll(dir); err != nil {
		log.Warn("removing the round folder failed", api.LogErr, err)
	}
	return nil
}

// hiddenSecrets are the secrets the sandbox must hide: those the training
// command's user can reach. bubblewrap, running as that user, could not
// mount over the others, and file modes keep them from it anyway.
func (e *Envoy) hiddenSecrets() []string {
	if e.runAs == nil {
		return e.cfg.Secrets
	}
	var out []string
	for _, s := range e.cfg.Secrets {
		if e.runAs.check("secret", s, 0) == nil {
			out = append(out, s)
		}
	}
	return out
}

// argv is the training command, its program resolved against the job
// folder when it is a relative path; a bare name is looked up in PATH.
func (e *Envoy) argv(j *fetched) []string {
	argv := slices.Clone(j.manifest.Train.Command)
	if len(argv) > 0 && strings.Contains(argv[0], "/") && !filepath.IsAbs(argv[0]) {
		argv[0] = filepath.Join(j.dir, argv[0])
	}
	return argv
}

// environ is the training command's whole environment: the contract's
// FEDPLANE_* variables, and HOME and TMPDIR in the experiment's workspace,
// PATH and LANG as the envoy has them (neither is secret; defaults when
// unset). Nothing else of the envoy's environment is passed on: it may hold
// credentials (cloud keys, tokens) that are the site's, not the job's.
func (e *Envoy) environ(x *experiment, r int32, input, output, metrics string) []string {
	path := os.Getenv("PATH")
	if path == "" {
		path = defaultPath
	}
	lang := os.Getenv("LANG")
	if lang == "" {
		lang = defaultLang
	}
	return []string{
		"FEDPLANE_INPUT_MODEL=" + input,
		"FEDPLANE_OUTPUT_MODEL=" + output,
		"FEDPLANE_METRICS=" + metrics,
		"FEDPLANE_DATA=" + e.cfg.ShardDir,
		"FEDPLANE_ROUND=" + strconv.Itoa(int(r)),
		"FEDPLANE_ENVOY=" + e.cfg.Name,
		"FEDPLANE_EXPERIMENT=" + x.id,
		"FEDPLANE_SAMPLES=" + strconv.FormatUint(e.cfg.Samples, 10),
		"HOME=" + filepath.Join(x.dir, homeDirName),
		"LANG=" + lang,
		"PATH=" + path,
		"TMPDIR=" + filepath.Join(x.dir, tmpDirName),
	}
}

// trainingError turns the outcome of a training run into the failure to
// report, or nil for success.
func trainingError(r int32, tail []byte, err error) error {
	var (
		ee *exitError
		te *timeoutError
	)
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ee):
		return &failure{code: ee.code(), kind: FailureTraining, err: fmt.Errorf("training command %v in round %d", ee, r), said: stderrTail(tail)}
	case errors.As(err, &te):
		return &failure{code: codeTimeout, kind: FailureTraining, err: fmt.Errorf("training command %v in round %d and was killed", te, r), said: stderrTail(tail)}
	default:
		return &failure{code: codeFailed, err: fmt.Errorf("round %d: %w", r, err)}
	}
}

// stderrTail ends a failure description with what the command last said.
func stderrTail(tail []byte) string {
	if len(tail) == 0 {
		return "; stderr was empty"
	}
	return "; stderr tail:\n" + string(tail)
}

// downloadModel writes the global model of round r, tensor by tensor in the
// order of the job's model, as a safetensors file at path.
func (e *Envoy) downloadModel(ctx context.Context, x *experiment, r int32, model *tensor.Index, path string) error {
	start := time.Now()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("global model: %w", err)
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 256<<10)
	w, err := tensor.NewSafetensorsWriter(bw, model.Tensors, nil)
	if err != nil {
		return fmt.Errorf("global model: %w", err)
	}
	hdr := e.header(x.id)
	var total int64
	for _, want := range model.Tensors {
		req := &aggregatorpb.GetAggregatedTensorRequest{
			Header:          hdr,
			TensorName:      want.Name,
			RoundNumber:     r,
			Report:          false,
			Tags:            []string{"model"},
			RequireLossless: true,
		}
		var resp *aggregatorpb.GetAggregatedTensorResponse
		err := retry(ctx, x.log, "GetAggregatedTensor", func(ctx context.Context) error {
			var err error
			resp, err = e.aggc.GetAggregatedTensor(ctx, req)
			return err
		})
		if err != nil {
			return err
		}
		got, err := tensor.FromNamedTensor(resp.GetTensor())
		switch {
		case err != nil:
			return fmt.Errorf("global model of round %d: %w", r, err)
		case got.Name != want.Name:
			return fmt.Errorf("global model of round %d: asked for tensor %q, got %q", r, want.Name, got.Name)
		case got.DType != want.DType:
			return fmt.Errorf("global model of round %d: tensor %q is %s, the job's model has %s", r, want.Name, got.DType, want.DType)
		case !slices.Equal(got.Shape, want.Shape):
			return fmt.Errorf("global model of round %d: tensor %q has shape %v, the job's model has %v", r, want.Name, got.Shape, want.Shape)
		}
		e.prom.receivedBytes(BytesModels, int64(len(resp.GetTensor().GetDataBytes())))
		if _, err := w.Write(resp.GetTensor().GetDataBytes()); err != nil {
			return fmt.Errorf("global model: %w", err)
		}
		total += got.Size
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("global model: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("global model: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("global model: %w", err)
	}
	x.log.Info("global model received", api.LogRound, r, api.LogTensors, len(model.Tensors), api.LogBytes, total, api.LogTook, time.Since(start).Round(time.Millisecond))
	return nil
}
