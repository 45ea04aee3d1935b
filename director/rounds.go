package director

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/director/metrics"
	"github.com/fedplane/fedplane/job"
	"github.com/fedplane/fedplane/store"
	"github.com/fedplane/fedplane/tensor"
)

// This file is the round state machine of a running experiment: which task
// an envoy gets, the global model it trains from, its report, and the
// round's close (every participant reported, or the deadline passed with a
// quorum), aggregation and move to the next round.

// TaskTrain is the one task of fedplane's rounds.
const TaskTrain = "train"

// MetricSamples is the metric a training command reports its sample count in.
const MetricSamples = "n_samples"

// Task is what an envoy is to do next in an experiment.
type Task struct {
	// Round is the round being trained.
	Round int
	// Train: run Tasks in Round. Wait: the envoy reported every task of
	// Round and waits for the others. Quit: the experiment is over.
	Train, Wait, Quit bool
	// Tasks are the tasks of the round the envoy has not reported, in
	// order: fedplane's train task, or those of an OpenFL workspace's task
	// group (tasks.go).
	Tasks []job.Task
}

// participant resolves the running experiment id and checks that envoy
// takes part in it. ended is set (and exp nil) when the experiment exists
// but is over.
func (d *Director) participant(ctx context.Context, id, envoy string) (exp *experiment, ended bool, err error) {
	if id == "" || envoy == "" {
		return nil, false, fmt.Errorf("%w: the experiment and the envoy must be named", api.ErrInvalid)
	}
	if exp = d.runningExperiment(id); exp == nil {
		e, err := d.db.GetExperiment(ctx, id)
		if err != nil {
			return nil, false, err
		}
		if e.Status.Terminal() {
			return nil, true, nil
		}
		return nil, false, fmt.Errorf("%w: experiment %s is %s", api.ErrConflict, id, e.Status)
	}
	if !exp.isParticipant(envoy) {
		return nil, false, fmt.Errorf("%w: %s is not a participant of experiment %s", api.ErrNotAllowed, envoy, id)
	}
	return exp, false, nil
}

// running is participant for calls that need the experiment still running.
func (d *Director) running(ctx context.Context, id, envoy string) (*experiment, error) {
	exp, ended, err := d.participant(ctx, id, envoy)
	if err == nil && ended {
		err = fmt.Errorf("%w: experiment %s has ended", api.ErrConflict, id)
	}
	return exp, err
}

// NextTask tells envoy what to do in experiment id: train the current
// round, wait while others finish it, or quit once the experiment ended.
func (d *Director) NextTask(ctx context.Context, id, envoy string) (Task, error) {
	exp, ended, err := d.participant(ctx, id, envoy)
	if err != nil {
		return Task{}, err
	}
	if ended {
		// The rounds done, as OpenFL's aggregator answers quit with
		// rounds_to_train once they all are.
		e, err := d.db.GetExperiment(ctx, id)
		if err != nil {
			return Task{}, err
		}
		return Task{Quit: true, Round: e.RoundsDone}, nil
	}
	exp.mu.Lock()
	round := exp.round
	if !exp.inRoundLocked(envoy) {
		// Not sampled for this round (or its site refused the job): it
		// waits for the next.
		delete(exp.awaiting, envoy)
		exp.mu.Unlock()
		return Task{Round: round, Wait: true}, nil
	}
	rejoined := exp.rejoinLocked(envoy)
	reported, known := exp.reported[envoy], exp.training[envoy]
	if !reported {
		exp.training[envoy] = true
	}
	tasks := exp.pendingLocked(envoy)
	delete(exp.awaiting, envoy) // asking for a task: its site approved
	exp.mu.Unlock()
	if rejoined {
		d.log.InfoContext(ctx, "envoy rejoins the round it missed", api.LogJob, exp.id, api.LogEnvoy, envoy, api.LogRound, round)
	}
	if len(tasks) == 0 {
		return Task{Round: round, Wait: true}, nil
	}
	if !known && !reported {
		if err := d.db.SetEnvoyState(ctx, exp.id, envoy, api.EnvoyTraining, round, ""); err != nil && !errors.Is(err, api.ErrConflict) {
			return Task{}, err
		}
	}
	return Task{Round: round, Train: true, Tasks: tasks}, nil
}

// GlobalTensor returns the tensor name of the global model that round of
// experiment id trains from, for one of its envoys: its layout and bytes.
// With tensor.FormDelta it is that tensor minus the previous round's, as
// OpenFL's aggregator answers a delta_updates collaborator.
func (d *Director) GlobalTensor(ctx context.Context, id, envoy string, round int, name string, form tensor.Form) (tensor.Span, []byte, error) {
	exp, err := d.running(ctx, id, envoy)
	if err != nil {
		return tensor.Span{}, nil, err
	}
	if form == tensor.FormDelta {
		if err := d.openPrevious(ctx, exp, round); err != nil {
			return tensor.Span{}, nil, err
		}
	}
	exp.modelMu.RLock()
	defer exp.modelMu.RUnlock()
	m := exp.model
	if m == nil {
		return tensor.Span{}, nil, fmt.Errorf("%w: experiment %s has ended", api.ErrConflict, id)
	}
	if round != m.round {
		return tensor.Span{}, nil, fmt.Errorf("%w: round %d is not the current round %d", api.ErrConflict, round, m.round)
	}
	span, data, err := readTensor(m, name)
	if err != nil || form != tensor.FormDelta {
		return span, data, err
	}
	if exp.prev == nil || exp.prev.round != round-1 {
		// The round moved on between openPrevious and here.
		return tensor.Span{}, nil, fmt.Errorf("%w: round %d is not the current round", api.ErrConflict, round)
	}
	_, base, err := readTensor(exp.prev, name)
	if err != nil {
		return tensor.Span{}, nil, err
	}
	if len(base) != len(data) {
		return tensor.Span{}, nil, fmt.Errorf("tensor %q: round %d's model holds %d bytes, round %d's %d", name, round-1, len(base), round, len(data))
	}
	for i := 0; i+4 <= len(data); i += 4 {
		v := math.Float32frombits(binary.LittleEndian.Uint32(data[i:])) - math.Float32frombits(binary.LittleEndian.Uint32(base[i:]))
		binary.LittleEndian.PutUint32(data[i:], math.Float32bits(v))
	}
	return span, data, nil
}

// openPrevious opens the global model of round-1, the base of round's
// deltas, unless it is open. Models of past rounds stay on disk (the best
// one may be any), so this is a read, never a recomputation.
func (d *Director) openPrevious(ctx context.Context, exp *experiment, round int) error {
	exp.modelMu.RLock()
	open := exp.prev != nil && exp.prev.round == round-1
	exp.modelMu.RUnlock()
	if open || round < 1 {
		return nil
	}
	prev, err := d.openModel(ctx, exp.id, round-1)
	if err != nil {
		return err
	}
	exp.modelMu.Lock()
	defer exp.modelMu.Unlock()
	if exp.model == nil || exp.model.round != round || (exp.prev != nil && exp.prev.round == round-1) {
		prev.close() // ended, moved on, or opened by another caller meanwhile
		return nil
	}
	exp.prev.close()
	exp.prev = prev
	return nil
}

// readTensor reads tensor name of m.
func readTensor(m *roundModel, name string) (tensor.Span, []byte, error) {
	span, ok := m.x.Lookup(name)
	if !ok {
		return tensor.Span{}, nil, fmt.Errorf("%w: the model has no tensor %q", api.ErrNotFound, name)
	}
	data := make([]byte, span.Size)
	if _, err := m.x.Section(span).ReadAt(data, 0); err != nil && !(errors.Is(err, io.EOF) && len(data) == 0) {
		return tensor.Span{}, nil, fmt.Errorf("read tensor %q: %w", span.Name, err)
	}
	return span, data, nil
}

// Report is an envoy's task results as the director took them.
type Report struct {
	Experiment string
	Envoy      string
	Round      int
	// Receiver and CommonName are the results header's, which the reply
	// echoes.
	Receiver, CommonName string
}

// resultsHeaderMax is how much of a task results stream the director
// reads into memory to find its header before it writes anything.
const resultsHeaderMax = 64 << 10

// ReportResults takes an envoy's serialized TaskResults from r (the
// stream's bytes). Before a byte goes to disk it reads the header from the
// stream's first bytes and checks it: verify, if not nil, is asked whether
// the caller may report as the envoy the header names; the envoy must take
// part in the running experiment, the round must be the current one and
// not reported yet, and no other upload of the envoy's may be arriving.
// The upload then reserves its model's most (tensor.MaxTaskResultsSize)
// from the director's temp space for results (MaxResultsInFlight) and may
// write no more. The results are checked against the experiment's model,
// every value must be finite, and they are stored and recorded. The
// report that completes a round starts its aggregation in the background:
// no envoy's call waits for it.
func (d *Director) ReportResults(ctx context.Context, r io.Reader, verify func(envoy string) error) (Report, error) {
	return d.reportResults(ctx, r, verify, nil)
}

// ReportResultsResumable is ReportResults for a stream that may resume
// after a cut (heldresults.go): m describes the whole results and where
// r's bytes begin. A first attempt (offset 0) is checked as ReportResults
// checks any stream, before a byte is stored, reserves m.Size of the temp
// space and keeps what arrived when cut; a resumed one appends to it. Once
// all m.Size bytes are held, their sha256 must be m.SHA256, then the
// results are checked, stored and recorded as ReportResults does.
func (d *Director) ReportResultsResumable(ctx context.Context, r io.Reader, verify func(envoy string) error, m ResultsResume) (Report, error) {
	if err := m.Check(); err != nil {
		return Report{}, err
	}
	if m.Offset > 0 {
		return d.resumeResults(ctx, r, verify, m)
	}
	return d.reportResults(ctx, r, verify, &m)
}

// reportResults is ReportResults, resumable when m is not nil.
func (d *Director) reportResults(ctx context.Context, r io.Reader, verify func(envoy string) error, m *ResultsResume) (Report, error) {
	prefix := make([]byte, resultsHeaderMax)
	k, err := io.ReadFull(r, prefix)
	whole := errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
	// cut is the error of a resumable stream that broke after k bytes:
	// once they hold the header, they are checked and held as any first
	// attempt's, and the envoy resumes after them.
	var cut error
	if err != nil && !whole {
		if m == nil || k == 0 {
			return Report{}, err
		}
		cut = err
	}
	if k == 0 {
		return Report{}, fmt.Errorf("%w: empty task results stream", api.ErrInvalid)
	}
	prefix = prefix[:k]
	h, err := tensor.ReadTaskResultsHeader(prefix, whole)
	if cut != nil && errors.Is(err, tensor.ErrHeaderTooLate) {
		return Report{}, cut // cut before the header arrived: nothing to hold
	}
	if err != nil {
		return Report{}, fmt.Errorf("%w: %w", api.ErrInvalid, err)
	}
	name, round := h.Sender, int(h.Round)
	if verify != nil {
		if err := verify(name); err != nil {
			return Report{}, err
		}
	}
	exp, err := d.running(ctx, h.FederationUUID, name)
	if err != nil {
		return Report{}, err
	}
	rep := Report{Experiment: exp.id, Envoy: name, Round: round, Receiver: h.Receiver, CommonName: h.CommonName}
	if o := exp.manifest.OpenFL; o != nil {
		t, ok := o.Lookup(h.TaskName)
		if !ok {
			return rep, fmt.Errorf("%w: task %q is not in the experiment's task group", api.ErrInvalid, h.TaskName)
		}
		if t.Type == job.TaskTypeValidate {
			if cut != nil {
				return rep, cut // a validation's metrics are taken whole
			}
			return d.reportValidation(ctx, exp, rep, t, h, prefix, whole)
		}
	}
	if h.DataSize <= 0 {
		return rep, fmt.Errorf("%w: data_size is %d; it must be the positive number of samples trained on", api.ErrInvalid, h.DataSize)
	}
	if err := exp.claimUpload(name, round); err != nil {
		return rep, err
	}
	defer exp.doneUploading(name)
	exp.modelMu.RLock()
	var most int64
	if exp.model != nil {
		most = min(tensor.MaxTaskResultsSize(exp.model.x), d.cfg.MaxJobSize)
	}
	exp.modelMu.RUnlock()
	if most == 0 {
		return rep, fmt.Errorf("%w: experiment %s has ended", api.ErrConflict, exp.id)
	}
	if m != nil {
		if m.Size > most || int64(len(prefix)) > m.Size {
			return rep, fmt.Errorf("%w: task results of %d bytes announced, the model allows at most %d (and the stream holds %d already)", api.ErrTooLarge, m.Size, most, len(prefix))
		}
		release, err := d.reserveResults(m.Size)
		if err != nil {
			return rep, err
		}
		f, err := d.createPart(partialResults)
		if err != nil {
			release()
			return rep, err
		}
		u := &heldResults{id: m.ID, envoy: name, exp: exp.id, round: round, size: m.Size, sum: m.SHA256, hdr: h, f: f, release: release, created: time.Now()}
		if err := d.heldRes.begin(u); err != nil {
			u.discard()
			return rep, err
		}
		if cut != nil {
			r = failingReader{cut}
		}
		tmp, release, err := d.receiveHeld(u, prefix, r)
		if err != nil {
			return rep, err
		}
		defer release()
		return d.storeResults(ctx, exp, rep, h, tmp, m.Size)
	}
	release, err := d.reserveResults(most)
	if err != nil {
		return rep, err
	}
	defer release()

	tmp, n, err := d.receiveResults(prefix, r, most)
	d.metrics.Received(metrics.KindResults, n)
	if err != nil {
		return rep, err
	}
	return d.storeResults(ctx, exp, rep, h, tmp, n)
}

// storeResults reads the n bytes of task results in tmp, whose header h
// was checked before they were received, checks them against it and the
// experiment's model, and stores and records them. It owns tmp.
func (d *Director) storeResults(ctx context.Context, exp *experiment, rep Report, h tensor.TaskResultsHeader, tmp *os.File, n int64) (Report, error) {
	name, round := rep.Envoy, rep.Round
	committed := false
	defer func() {
		if !committed {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	res, err := tensor.ReadTaskResults(tmp, n)
	if err != nil {
		return rep, fmt.Errorf("%w: task results: %w", api.ErrInvalid, err)
	}
	if got := res.Header; got.Sender != name || got.FederationUUID != h.FederationUUID || got.Round != h.Round || got.DataSize != h.DataSize {
		// A header field repeated after the tensors, which protobuf
		// merges: the checks above were of other values.
		return rep, fmt.Errorf("%w: task results: the header changes after the tensors", api.ErrInvalid)
	}
	if err := tensor.CheckFinite(res.Model); err != nil {
		return rep, fmt.Errorf("%w: results of %s: %w", api.ErrInvalid, name, err)
	}
	// Claim the report: a retry racing its first attempt, or a round that
	// moves on meanwhile, must not store it twice or into the next round.
	exp.mu.Lock()
	cur, already, closing, busy := exp.round, exp.reported[name], exp.aggregating, exp.receiving[name]
	claimed := round == cur && !already && !closing && !busy
	if claimed {
		exp.receiving[name] = true
	}
	exp.mu.Unlock()
	switch {
	case closing && !already:
		return rep, lateResults(name, round)
	case round < cur:
		return rep, closedRound(round, cur)
	case round != cur:
		return rep, fmt.Errorf("%w: results are for round %d, the current round is %d", api.ErrConflict, round, cur)
	case already || busy:
		return rep, fmt.Errorf("%w: %s already reported round %d", api.ErrAlreadyExists, name, round)
	}
	defer func() {
		exp.mu.Lock()
		delete(exp.receiving, name)
		exp.mu.Unlock()
	}()
	exp.modelMu.RLock()
	ended := exp.model == nil
	var layoutErr error
	if !ended {
		layoutErr = tensor.SameLayout(exp.model.x, res.Model)
		if layoutErr == nil {
			layoutErr = tensor.CheckDeltaFinite(exp.model.x, res.Model)
		}
	}
	exp.modelMu.RUnlock()
	if ended {
		return rep, fmt.Errorf("%w: experiment %s has ended", api.ErrConflict, exp.id)
	}
	if layoutErr != nil {
		return rep, fmt.Errorf("%w: results of %s do not match the model: %w", api.ErrInvalid, name, layoutErr)
	}

	rel := filepath.Join(experimentsDir, exp.id, "results", fmt.Sprintf("round-%04d", round), name+".taskresults")
	if err := d.commitFile(ctx, tmp, rel); err != nil {
		return rep, err
	}
	committed = true
	os.Remove(tmp.Name()) // a no-op once renamed; an S3 store has uploaded it
	metrics := make([]store.Metric, 0, len(res.Metrics))
	for _, m := range res.Metrics {
		metrics = append(metrics, store.Metric{ExperimentID: exp.id, Round: round, Origin: name, Task: exp.trainTaskName(), Name: m.Name, Value: float64(m.Value)})
	}
	err = d.db.RecordTaskResult(ctx, store.TaskResult{ExperimentID: exp.id, Round: round, Envoy: name, DataSize: int64(res.Header.DataSize), ResultPath: rel}, metrics)
	if err != nil {
		d.removeBlob(ctx, rel)
		return rep, err
	}
	d.log.InfoContext(ctx, "task results received", api.LogJob, exp.id, api.LogEnvoy, name, api.LogRound, round, api.LogDataSize, res.Header.DataSize, api.LogBytes, n)
	d.notify(exp.id)

	exp.mu.Lock()
	if exp.round == round { // the round cannot move on while a claim is open, but be sure
		exp.reported[name] = true
		delete(exp.missed, name) // back in time after all
	}
	exp.mu.Unlock()
	d.settle(ctx, exp, round, false)
	return rep, nil
}

// receiveResults writes task results, prefix and then the rest of r,
// into a temp file, refusing more than most bytes.
func (d *Director) receiveResults(prefix []byte, r io.Reader, most int64) (*os.File, int64, error) {
	if int64(len(prefix)) > most {
		return nil, 0, fmt.Errorf("%w: task results larger than the model allows (%d bytes)", api.ErrTooLarge, most)
	}
	tmp, err := d.createTemp("results-*.pb")
	if err != nil {
		return nil, 0, err
	}
	fail := func(err error) (*os.File, int64, error) {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, 0, err
	}
	bw := bufio.NewWriterSize(tmp, 1<<20)
	if _, err := bw.Write(prefix); err != nil {
		return fail(err)
	}
	rest := most - int64(len(prefix))
	n, err := io.Copy(&capWriter{w: bw, left: rest, what: fmt.Sprintf("task results larger than the model allows (%d bytes)", most)}, r)
	if err != nil {
		return fail(err)
	}
	if err := bw.Flush(); err != nil {
		return fail(err)
	}
	return tmp, int64(len(prefix)) + n, nil
}

// claimUpload marks envoy's results for round as arriving, or says why
// they may not: another round, reported already, the round closed, or an
// upload of the envoy's arriving.
func (e *experiment) claimUpload(envoy string, round int) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch cur := e.round; {
	case e.aggregating && !e.reported[envoy] && round == cur:
		return lateResults(envoy, round)
	case round < cur:
		return closedRound(round, cur)
	case round != cur:
		return fmt.Errorf("%w: results are for round %d, the current round is %d", api.ErrConflict, round, cur)
	case e.reported[envoy]:
		return fmt.Errorf("%w: %s already reported round %d", api.ErrAlreadyExists, envoy, round)
	case e.uploading[envoy]:
		return fmt.Errorf("%w: %s is sending its results of round %d already", api.ErrAlreadyExists, envoy, round)
	}
	e.uploading[envoy] = true
	return nil
}

// doneUploading ends envoy's claim of claimUpload.
func (e *experiment) doneUploading(envoy string) {
	e.mu.Lock()
	delete(e.uploading, envoy)
	e.mu.Unlock()
}

// lateResults refuses results of a round that closed without them: they
// are never counted.
func lateResults(envoy string, round int) error {
	return fmt.Errorf("%w: round %d closed without %s's results (its quorum reported and its deadline passed, or every other envoy reported); they are not counted", api.ErrConflict, round, envoy)
}

// closedRound refuses results of a round that has closed.
func closedRound(round, cur int) error {
	return fmt.Errorf("%w: results are for round %d, which has closed (the current round is %d); they are not counted", api.ErrConflict, round, cur)
}

// reserveResults reserves n bytes of the temp space for task results, or
// refuses with api.ErrBusy when the director's cap would be exceeded.
func (d *Director) reserveResults(n int64) (release func(), err error) {
	d.inflight.Lock()
	defer d.inflight.Unlock()
	if d.inflight.n+n > d.cfg.MaxResultsInFlight {
		return nil, fmt.Errorf("%w: task results of %d bytes would exceed the director's temp space for results (%d of %d bytes in use); try again",
			api.ErrBusy, n, d.inflight.n, d.cfg.MaxResultsInFlight)
	}
	d.inflight.n += n
	return func() {
		d.inflight.Lock()
		d.inflight.n -= n
		d.inflight.Unlock()
	}, nil
}

// failingReader is a stream that broke: every read fails with err.
type failingReader struct{ err error }

func (f failingReader) Read([]byte) (int, error) { return 0, f.err }

// capWriter refuses to write past a size cap, before the bytes land.
type capWriter struct {
	w    io.Writer
	left int64
	what string
}

func (c *capWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > c.left {
		return 0, fmt.Errorf("%w: %s", api.ErrTooLarge, c.what)
	}
	c.left -= int64(len(p))
	return c.w.Write(p)
}

// aggregateAsync aggregates round in the background, owned by the
// director: Close waits for it. Once Close has begun nothing new starts;
// the reports are stored, and the next start resumes the round.
func (d *Director) aggregateAsync(exp *experiment, round int) {
	d.work.Go(func() { d.aggregate(context.Background(), exp, round) })
}

// aggregate turns the reports of round into the next round's model with
// job.json's aggregator (fedavg: weighted by data_size), and moves the experiment on (or finishes it).
// A failure fails the experiment with the reason.
func (d *Director) aggregate(ctx context.Context, exp *experiment, round int) {
	if err := d.aggregateRound(ctx, exp, round); err != nil {
		if errors.Is(err, api.ErrConflict) {
			return // ended while aggregating (aborted, failed): nothing to do
		}
		d.log.ErrorContext(ctx, "aggregation failed", api.LogJob, exp.id, api.LogRound, round, api.LogErr, err)
		d.endExperiment(ctx, exp.id, api.JobFailed, fmt.Sprintf("aggregation of round %d failed: %v", round, err))
	}
}

// A round that failed to aggregate stays claimed (aggregating): the
// experiment is failed next, and neither a deadline nor a straggler's
// report may start a second aggregation of it meanwhile.
func (d *Director) aggregateRound(ctx context.Context, exp *experiment, round int) (err error) {
	aggStart := d.cfg.Now()
	defer func() {
		if err == nil {
			exp.mu.Lock()
			exp.aggregating = false
			exp.mu.Unlock()
		}
	}()
	results, err := d.db.TaskResults(ctx, exp.id, round)
	if err != nil {
		return err
	}
	inputs := make([]tensor.Input, 0, len(results))
	var metrics []store.Metric
	sums := map[string][2]float64{} // metric name -> weighted sum, weight
	var totalSamples float64
	var order []string
	for _, r := range results {
		f, err := d.openBlob(ctx, r.ResultPath)
		if err != nil {
			return fmt.Errorf("results of %s: %w", r.Envoy, err)
		}
		defer f.Close()
		res, err := tensor.ReadTaskResults(f, f.Size())
		if err != nil {
			return fmt.Errorf("results of %s: %w", r.Envoy, err)
		}
		inputs = append(inputs, tensor.Input{X: res.Model, Weight: float64(r.DataSize)})
		totalSamples += float64(r.DataSize)
		for _, m := range res.Metrics {
			s, seen := sums[m.Name]
			if !seen {
				order = append(order, m.Name)
			}
			sums[m.Name] = [2]float64{s[0] + float64(m.Value)*float64(r.DataSize), s[1] + float64(r.DataSize)}
		}
	}
	for _, name := range order {
		s := sums[name]
		value := s[0] / s[1]
		if name == MetricSamples {
			value = totalSamples // a count adds up; its weighted mean means nothing
		}
		metrics = append(metrics, store.Metric{ExperimentID: exp.id, Round: round, Origin: api.OriginAggregator, Task: exp.trainTaskName(), Name: name, Value: value})
	}
	exp.mu.Lock()
	metrics = append(metrics, exp.validationMetricsLocked(round)...)
	exp.mu.Unlock()

	tmp, err := d.createTemp("model-*.safetensors")
	if err != nil {
		return err
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name()) // a no-op once renamed
	}()
	hw := job.NewHashWriter(tmp)
	defer hw.Close()
	bw := bufio.NewWriterSize(hw, 1<<20)
	exp.modelMu.RLock()
	if exp.model == nil {
		exp.modelMu.RUnlock()
		return fmt.Errorf("experiment ended: %w", api.ErrConflict)
	}
	state, err := d.aggregateModel(ctx, exp, round, inputs, bw)
	exp.modelMu.RUnlock()
	if err != nil {
		return err
	}
	defer state.discard()
	if err := bw.Flush(); err != nil {
		return err
	}
	hw.Close()
	next := round + 1
	rel := filepath.Join(experimentsDir, exp.id, "models", fmt.Sprintf("round-%04d.safetensors", next))
	if err := d.commitFile(ctx, tmp, rel); err != nil {
		return err
	}
	stateRel, stateSum, err := d.commitState(ctx, state, exp, next)
	if err != nil {
		d.removeBlob(ctx, rel)
		return err
	}
	final := next >= exp.manifest.Rounds
	var sampled []string
	if !final {
		sampled = d.sample(exp, next)
	}
	// From here to the model swap, no abort or failure may interleave.
	d.lc.life.Lock()
	defer d.lc.life.Unlock()
	err = d.db.CompleteRound(ctx, store.Round{ExperimentID: exp.id, Round: next, ModelPath: rel, ModelSHA256: hw.Sum(),
		StatePath: stateRel, StateSHA256: stateSum, Participants: sampled}, metrics, final)
	if err != nil {
		d.removeBlob(ctx, rel)
		if stateRel != "" {
			d.removeBlob(ctx, stateRel)
		}
		return err
	}
	d.applyRetention(ctx, exp, next)
	exp.mu.Lock()
	roundStart := exp.roundStart
	exp.mu.Unlock()
	now := d.cfg.Now()
	d.metrics.RoundDone(now.Sub(roundStart), now.Sub(aggStart))
	// The reports are folded into the new model: they are no longer needed.
	d.removeBlobs(ctx, filepath.Join(experimentsDir, exp.id, "results", fmt.Sprintf("round-%04d", round)))
	d.removeState(ctx, exp, round)
	d.log.InfoContext(ctx, "round aggregated", api.LogJob, exp.id, api.LogRound, round, api.LogReports, len(inputs), api.LogFinal, final)
	d.emitRound(exp, next, len(inputs), metrics)
	defer d.notify(exp.id)

	exp.disarm()
	if final {
		d.lc.mu.Lock()
		delete(d.lc.running, exp.id)
		d.lc.mu.Unlock()
		exp.closeModel()
		d.log.InfoContext(ctx, "experiment ended", api.LogJob, exp.id, api.LogStatus, api.JobFinished)
		d.emit(api.Event{Kind: api.EventJobFinished, Job: exp.id, JobName: exp.manifest.Name,
			Message: fmt.Sprintf("%d rounds done", next)})
		d.kickScheduler()
		return nil
	}
	model, err := d.openModel(ctx, exp.id, next)
	if err != nil {
		return err
	}
	exp.modelMu.Lock()
	// The model replaced is the base of the new round's deltas.
	old := exp.prev
	exp.prev, exp.model = exp.model, model
	exp.modelMu.Unlock()
	old.close()
	exp.mu.Lock()
	exp.round, exp.roundStart = next, d.cfg.Now()
	exp.reported = map[string]bool{}
	exp.training = map[string]bool{}
	exp.missed = map[string]miss{}
	exp.sampled = nameSet(sampled)
	exp.validated = map[string]map[string]bool{}
	exp.valSums, exp.valOrder = map[string]*metricSum{}, nil
	exp.mu.Unlock()
	d.armRound(exp, next)
	return nil
}

// emitRound records a round's aggregation: done is the rounds done, and
// the event carries the aggregator's metrics as "task/name".
func (d *Director) emitRound(exp *experiment, done, reports int, metrics []store.Metric) {
	values := make(map[string]float64, len(metrics))
	for _, m := range metrics {
		if m.Origin == api.OriginAggregator {
			values[m.Task+"/"+m.Name] = m.Value
		}
	}
	d.emit(api.Event{Kind: api.EventJobRound, Job: exp.id, JobName: exp.manifest.Name, Round: done,
		Message: fmt.Sprintf("round %d of %d aggregated from %d reports", done, exp.manifest.Rounds, reports), Metrics: values})
}

// armRound starts round's deadline: round_timeout, or the default
// (job.Manifest.RoundDeadline), so that no round waits forever.
func (d *Director) armRound(exp *experiment, round int) {
	d.armAfter(exp, round, exp.manifest.RoundDeadline())
}

// armAfter arms round's deadline to fire after wait, unless the director
// drains: a deadline that fires while envoys cannot reach a stopping
// director would fail a job that a restart resumes.
func (d *Director) armAfter(exp *experiment, round int, wait time.Duration) {
	if d.draining() {
		return
	}
	exp.mu.Lock()
	defer exp.mu.Unlock()
	if exp.deadline != nil {
		exp.deadline.Stop()
	}
	exp.deadline = time.AfterFunc(wait, func() { d.settle(context.Background(), exp, round, true) })
}

// receivingGrace is how long a round past its deadline waits for a report
// that is being received before it closes.
const receivingGrace = time.Second

// disarm stops the round's timer.
func (e *experiment) disarm() {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.deadline != nil {
		e.deadline.Stop()
		e.deadline = nil
	}
}
