package director

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedplane/fedplane/api/aggregatorpb"
	"github.com/fedplane/fedplane/job"
	"github.com/fedplane/fedplane/pki"
	"github.com/fedplane/fedplane/store"
	"github.com/fedplane/fedplane/tensor"
)

// aggregatorService implements openfl.aggregator.Aggregator for every
// experiment at once, told apart by MessageHeader.federation_uuid (the
// experiment id). RPCs of later issues answer Unimplemented.
type aggregatorService struct {
	aggregatorpb.UnimplementedAggregatorServer
	d *Director
}

// The train task, the one task fedplane's rounds have.
const taskTrain = "train"

// waitSeconds is GetTasks' sleep_time for an envoy that reported its round
// while others have not yet.
const waitSeconds = 1

// metricSamples is the metric a training command reports its sample count in.
const metricSamples = "n_samples"

// directorName is MessageHeader.sender of the director's replies.
const directorName = "director"

// participantOf resolves the running experiment of a header and checks that
// its sender takes part in it. ended is set (and exp nil) when the
// experiment exists but is over.
func (d *Director) participantOf(ctx context.Context, method string, h *aggregatorpb.MessageHeader) (exp *experiment, ended bool, err error) {
	id, sender := h.GetFederationUuid(), h.GetSender()
	if id == "" || sender == "" {
		return nil, false, fmt.Errorf("%w: header.federation_uuid and header.sender are required", ErrInvalid)
	}
	if err := d.checkEnvoy(ctx, method, sender); err != nil {
		return nil, false, err
	}
	if exp = d.runningExperiment(id); exp == nil {
		e, err := d.db.GetExperiment(ctx, id)
		if err != nil {
			return nil, false, err
		}
		if store.Terminal(e.Status) {
			return nil, true, nil
		}
		return nil, false, fmt.Errorf("%w: experiment %s is %s", ErrConflict, id, e.Status)
	}
	if !exp.isParticipant(sender) {
		return nil, false, fmt.Errorf("%w: %s is not a participant of experiment %s", ErrPermission, sender, id)
	}
	return exp, false, nil
}

func replyHeader(h *aggregatorpb.MessageHeader) *aggregatorpb.MessageHeader {
	return &aggregatorpb.MessageHeader{Sender: directorName, Receiver: h.GetSender(), FederationUuid: h.GetFederationUuid()}
}

// GetTasks hands an envoy the train task of the current round, tells it to
// wait while others finish the round, or to quit once the experiment ended.
func (s *aggregatorService) GetTasks(ctx context.Context, req *aggregatorpb.GetTasksRequest) (*aggregatorpb.GetTasksResponse, error) {
	d := s.d
	h := req.GetHeader()
	exp, ended, err := d.participantOf(ctx, "GetTasks", h)
	if err != nil {
		return nil, toStatus(ctx, d.log, "GetTasks", err)
	}
	resp := &aggregatorpb.GetTasksResponse{Header: replyHeader(h)}
	if ended {
		resp.Quit = true
		return resp, nil
	}
	name := h.GetSender()
	exp.mu.Lock()
	round, reported, known := exp.round, exp.reported[name], exp.training[name]
	if !reported {
		exp.training[name] = true
	}
	exp.mu.Unlock()
	resp.RoundNumber = int32(round)
	if reported {
		resp.SleepTime = waitSeconds
		return resp, nil
	}
	if !known {
		if err := d.db.SetEnvoyState(ctx, exp.id, name, store.EnvoyTraining, round, ""); err != nil && !errors.Is(err, store.ErrStatus) {
			return nil, toStatus(ctx, d.log, "GetTasks", err)
		}
	}
	resp.Tasks = []*aggregatorpb.Task{{Name: taskTrain, FunctionName: taskTrain, TaskType: taskTrain}}
	return resp, nil
}

// GetAggregatedTensor returns one tensor of the global model of the round
// being trained, in OpenFL's tensor encoding.
func (s *aggregatorService) GetAggregatedTensor(ctx context.Context, req *aggregatorpb.GetAggregatedTensorRequest) (*aggregatorpb.GetAggregatedTensorResponse, error) {
	d := s.d
	exp, ended, err := d.participantOf(ctx, "GetAggregatedTensor", req.GetHeader())
	if err == nil && ended {
		err = fmt.Errorf("%w: experiment %s has ended", ErrConflict, req.GetHeader().GetFederationUuid())
	}
	if err != nil {
		return nil, toStatus(ctx, d.log, "GetAggregatedTensor", err)
	}
	exp.modelMu.RLock()
	defer exp.modelMu.RUnlock()
	m := exp.model
	if m == nil {
		return nil, status.Error(codes.FailedPrecondition, "experiment has ended")
	}
	if int(req.GetRoundNumber()) != m.round {
		return nil, status.Errorf(codes.FailedPrecondition, "round %d is not the current round %d", req.GetRoundNumber(), m.round)
	}
	span, ok := m.x.Lookup(req.GetTensorName())
	if !ok {
		return nil, status.Errorf(codes.NotFound, "the model has no tensor %q", req.GetTensorName())
	}
	data := make([]byte, span.Size)
	if _, err := m.x.Section(span).ReadAt(data, 0); err != nil && !(errors.Is(err, io.EOF) && len(data) == 0) {
		return nil, toStatus(ctx, d.log, "GetAggregatedTensor", fmt.Errorf("read tensor %q: %w", span.Name, err))
	}
	return &aggregatorpb.GetAggregatedTensorResponse{
		Header:      replyHeader(req.GetHeader()),
		RoundNumber: int32(m.round),
		Tensor:      tensor.NamedTensor(span, data, []string{"model"}, false),
	}, nil
}

// SendLocalTaskResults receives an envoy's serialized TaskResults as a
// stream of chunks into a file, checks it against the experiment and its
// model, records it, and aggregates the round once every participant has
// reported.
func (s *aggregatorService) SendLocalTaskResults(stream aggregatorpb.Aggregator_SendLocalTaskResultsServer) error {
	d := s.d
	ctx := stream.Context()
	const method = "SendLocalTaskResults"
	if d.cfg.TLS != nil {
		// Only envoys may make the director store a stream; which envoy
		// is checked against the results' header once it is parsed.
		if id, ok := pki.FromContext(ctx); !ok || id.Kind != pki.KindEnvoy {
			return toStatus(ctx, d.log, method, fmt.Errorf("%w: only envoys send task results", ErrPermission))
		}
	}
	tmp, n, err := d.receiveChunks(stream)
	if err != nil {
		return toStatus(ctx, d.log, method, err)
	}
	committed := false
	defer func() {
		if !committed {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	res, err := tensor.ReadTaskResults(tmp, n)
	if err != nil {
		return toStatus(ctx, d.log, method, fmt.Errorf("%w: task results: %w", ErrInvalid, err))
	}
	h := &aggregatorpb.MessageHeader{Sender: res.Header.Sender, FederationUuid: res.Header.FederationUUID}
	exp, ended, err := d.participantOf(ctx, method, h)
	if err == nil && ended {
		err = fmt.Errorf("%w: experiment %s has ended", ErrConflict, h.FederationUuid)
	}
	if err != nil {
		return toStatus(ctx, d.log, method, err)
	}
	name, round := h.Sender, int(res.Header.Round)
	if res.Header.DataSize <= 0 {
		return toStatus(ctx, d.log, method, fmt.Errorf("%w: data_size is %d; it must be the positive number of samples trained on", ErrInvalid, res.Header.DataSize))
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
		return status.Errorf(codes.FailedPrecondition, "round %d closed without %s's results (round_timeout)", round, name)
	case round != cur:
		return toStatus(ctx, d.log, method, fmt.Errorf("%w: results are for round %d, the current round is %d", ErrConflict, round, cur))
	case already || busy:
		return status.Errorf(codes.AlreadyExists, "%s already reported round %d", name, round)
	}
	defer func() {
		exp.mu.Lock()
		delete(exp.receiving, name)
		exp.mu.Unlock()
	}()
	exp.modelMu.RLock()
	layoutErr := errors.New("experiment has ended")
	if exp.model != nil {
		layoutErr = tensor.SameLayout(exp.model.x, res.Model)
	}
	exp.modelMu.RUnlock()
	if layoutErr != nil {
		return toStatus(ctx, d.log, method, fmt.Errorf("%w: results of %s do not match the model: %w", ErrInvalid, name, layoutErr))
	}

	rel := filepath.Join(experimentsDir, exp.id, "results", fmt.Sprintf("round-%04d", round), name+".taskresults")
	if err := d.commitFile(tmp, rel); err != nil {
		return toStatus(ctx, d.log, method, err)
	}
	committed = true
	metrics := make([]store.Metric, 0, len(res.Metrics))
	for _, m := range res.Metrics {
		metrics = append(metrics, store.Metric{ExperimentID: exp.id, Round: round, Origin: name, Task: taskTrain, Name: m.Name, Value: float64(m.Value)})
	}
	err = d.db.RecordTaskResult(ctx, store.TaskResult{ExperimentID: exp.id, Round: round, Envoy: name, DataSize: int64(res.Header.DataSize), ResultPath: rel}, metrics)
	if err != nil {
		os.Remove(filepath.Join(d.cfg.DataDir, rel))
		if errors.Is(err, store.ErrStatus) {
			return status.Errorf(codes.AlreadyExists, "%s already reported round %d", name, round)
		}
		return toStatus(ctx, d.log, method, err)
	}
	d.log.InfoContext(ctx, "task results received", keyJob, exp.id, keyEnvoy, name, keyRound, round, "data_size", res.Header.DataSize, "bytes", n)
	d.notify(exp.id)

	exp.mu.Lock()
	all := false
	if exp.round == round { // the round cannot move on while a claim is open, but be sure
		exp.reported[name] = true
		all = len(exp.reported) == len(exp.participants) && !exp.aggregating
		if all {
			exp.aggregating = true
		}
	}
	exp.mu.Unlock()
	if all {
		d.aggregate(context.WithoutCancel(ctx), exp, round)
	}
	return stream.SendAndClose(&aggregatorpb.SendLocalTaskResultsResponse{Header: replyHeader(h)})
}

// receiveChunks writes a DataStream into a temp file, refusing a chunk whose
// size differs from its bytes and a stream larger than MaxJobSize.
func (d *Director) receiveChunks(stream aggregatorpb.Aggregator_SendLocalTaskResultsServer) (*os.File, int64, error) {
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
	var n int64
	for i := 0; ; i++ {
		chunk, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fail(err)
		}
		if int(chunk.GetSize()) != len(chunk.GetNpbytes()) {
			return fail(fmt.Errorf("%w: broken stream: chunk %d has size %d but %d bytes", ErrInvalid, i, chunk.GetSize(), len(chunk.GetNpbytes())))
		}
		n += int64(len(chunk.GetNpbytes()))
		if n > d.cfg.MaxJobSize {
			return fail(fmt.Errorf("%w: task results larger than %d bytes", ErrInvalid, d.cfg.MaxJobSize))
		}
		if _, err := bw.Write(chunk.GetNpbytes()); err != nil {
			return fail(err)
		}
	}
	if n == 0 {
		return fail(fmt.Errorf("%w: empty task results stream", ErrInvalid))
	}
	if err := bw.Flush(); err != nil {
		return fail(err)
	}
	return tmp, n, nil
}

// aggregate averages the reports of round into the next round's model,
// weighted by data_size, and moves the experiment on (or finishes it).
// A failure fails the experiment with the reason.
func (d *Director) aggregate(ctx context.Context, exp *experiment, round int) {
	if err := d.aggregateRound(ctx, exp, round); err != nil {
		if errors.Is(err, store.ErrStatus) {
			return // ended while aggregating (aborted, failed): nothing to do
		}
		d.log.ErrorContext(ctx, "aggregation failed", keyJob, exp.id, keyRound, round, keyErr, err)
		d.endExperiment(ctx, exp.id, store.StatusFailed, fmt.Sprintf("aggregation of round %d failed: %v", round, err))
	}
}

func (d *Director) aggregateRound(ctx context.Context, exp *experiment, round int) error {
	defer func() {
		exp.mu.Lock()
		exp.aggregating = false
		exp.mu.Unlock()
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
		f, err := os.Open(filepath.Join(d.cfg.DataDir, r.ResultPath))
		if err != nil {
			return fmt.Errorf("results of %s: %w", r.Envoy, err)
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return err
		}
		res, err := tensor.ReadTaskResults(f, fi.Size())
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
		if name == metricSamples {
			value = totalSamples // a count adds up; its weighted mean means nothing
		}
		metrics = append(metrics, store.Metric{ExperimentID: exp.id, Round: round, Origin: store.OriginAggregator, Task: taskTrain, Name: name, Value: value})
	}

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
		return fmt.Errorf("experiment ended: %w", store.ErrStatus)
	}
	err = tensor.FedAvg(bw, exp.model.x, inputs)
	exp.modelMu.RUnlock()
	if err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	hw.Close()
	next := round + 1
	rel := filepath.Join(experimentsDir, exp.id, "models", fmt.Sprintf("round-%04d.safetensors", next))
	if err := d.commitFile(tmp, rel); err != nil {
		return err
	}
	final := next >= exp.manifest.Rounds
	// From here to the model swap, no abort or failure may interleave.
	d.rt.life.Lock()
	defer d.rt.life.Unlock()
	err = d.db.CompleteRound(ctx, store.Round{ExperimentID: exp.id, Round: next, ModelPath: rel, ModelSHA256: hw.Sum()}, metrics, final)
	if err != nil {
		os.Remove(filepath.Join(d.cfg.DataDir, rel))
		return err
	}
	// The reports are folded into the new model: they are no longer needed.
	os.RemoveAll(filepath.Join(d.cfg.DataDir, experimentsDir, exp.id, "results", fmt.Sprintf("round-%04d", round)))
	d.log.InfoContext(ctx, "round aggregated", keyJob, exp.id, keyRound, round, "reports", len(inputs), "final", final)
	defer d.notify(exp.id)

	exp.disarm()
	if final {
		d.rt.mu.Lock()
		delete(d.rt.running, exp.id)
		d.rt.mu.Unlock()
		exp.closeModel()
		d.log.InfoContext(ctx, "experiment ended", keyJob, exp.id, "status", store.StatusFinished)
		d.kickScheduler()
		return nil
	}
	model, err := d.openModel(ctx, exp.id, next)
	if err != nil {
		return err
	}
	exp.modelMu.Lock()
	old := exp.model
	exp.model = model
	exp.modelMu.Unlock()
	old.close()
	exp.mu.Lock()
	exp.round = next
	exp.reported = map[string]bool{}
	exp.training = map[string]bool{}
	exp.mu.Unlock()
	d.armRound(exp, next)
	return nil
}

// GetMetricStream is the Director service's, on the aggregator's wire.
func (s *aggregatorService) GetMetricStream(req *aggregatorpb.GetMetricStreamRequest, stream aggregatorpb.Aggregator_GetMetricStreamServer) error {
	return s.d.metricStream(stream.Context(), req.GetExperimentName(), func(m store.Metric) error {
		return stream.Send(&aggregatorpb.GetMetricStreamResponse{
			MetricOrigin: m.Origin, TaskName: m.Task, MetricName: m.Name, MetricValue: float32(m.Value), Round: uint32(m.Round),
		})
	})
}

// GetTrainedModel is the Director service's, on the aggregator's wire.
func (s *aggregatorService) GetTrainedModel(ctx context.Context, req *aggregatorpb.GetTrainedModelRequest) (*aggregatorpb.TrainedModelResponse, error) {
	mp, err := s.d.modelProto(ctx, req.GetExperimentName(), req.GetModelType() == aggregatorpb.GetTrainedModelRequest_BEST_MODEL)
	if err != nil {
		return nil, toStatus(ctx, s.d.log, "GetTrainedModel", err)
	}
	return &aggregatorpb.TrainedModelResponse{ModelProto: mp}, nil
}

// GetExperimentDescription is the Director service's, on the aggregator's wire.
func (s *aggregatorService) GetExperimentDescription(ctx context.Context, req *aggregatorpb.GetExperimentDescriptionRequest) (*aggregatorpb.GetExperimentDescriptionResponse, error) {
	desc, err := s.d.describe(ctx, req.GetName())
	if err != nil {
		return nil, toStatus(ctx, s.d.log, "GetExperimentDescription", err)
	}
	return &aggregatorpb.GetExperimentDescriptionResponse{Experiment: desc}, nil
}
