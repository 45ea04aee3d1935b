package openfl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/aggregatorpb"
	"github.com/fedplane/fedplane/api/basepb"
	"github.com/fedplane/fedplane/director"
	"github.com/fedplane/fedplane/director/metrics"
	"github.com/fedplane/fedplane/store"
	"github.com/fedplane/fedplane/tensor"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// aggregatorService implements openfl.aggregator.Aggregator for every
// experiment at once, told apart by MessageHeader.federation_uuid (the
// experiment id). RPCs fedplane does not serve answer Unimplemented.
type aggregatorService struct {
	aggregatorpb.UnimplementedAggregatorServer
	*service
}

// waitSeconds is GetTasks' sleep_time for an envoy that reported its round
// while others have not yet.
const waitSeconds = 1

// directorName is MessageHeader.sender of the director's replies to a
// request that names no receiver.
const directorName = "director"

// replyHeader is the header of the reply to a request with header h, as
// OpenFL's aggregator fills it (aggregator_server.py get_header) and its
// collaborator checks it (aggregator_client.py validate_response): sent by
// the aggregator the request addressed ("aggregator_" + federation_uuid
// for an OpenFL collaborator, "director" for fedplane's envoy), to the
// request's sender, with its federation and common name echoed.
func replyHeader(h *aggregatorpb.MessageHeader) *aggregatorpb.MessageHeader {
	sender := h.GetReceiver()
	if sender == "" {
		sender = directorName
	}
	return &aggregatorpb.MessageHeader{
		Sender:                  sender,
		Receiver:                h.GetSender(),
		FederationUuid:          h.GetFederationUuid(),
		SingleColCertCommonName: h.GetSingleColCertCommonName(),
	}
}

// GetTasks hands an envoy the tasks of the current round it has not
// reported, in order (fedplane's train task, or an OpenFL workspace's task
// group), tells it to wait (sleep_time, no tasks) while others finish the
// round, or to quit (quit, no tasks, no sleep) once the experiment ended,
// as OpenFL's aggregator answers.
func (s *aggregatorService) GetTasks(ctx context.Context, req *aggregatorpb.GetTasksRequest) (*aggregatorpb.GetTasksResponse, error) {
	h := req.GetHeader()
	if err := s.checkEnvoy(ctx, "GetTasks", h.GetSender()); err != nil {
		return nil, err
	}
	task, err := s.d.NextTask(ctx, h.GetFederationUuid(), h.GetSender())
	if err != nil {
		return nil, err
	}
	resp := &aggregatorpb.GetTasksResponse{Header: replyHeader(h), RoundNumber: int32(task.Round)}
	switch {
	case task.Quit:
		resp.Quit = true
	case task.Wait:
		resp.SleepTime = waitSeconds
	case task.Train:
		// All four fields, as OpenFL's aggregator sends its Task objects:
		// a collaborator built on the interactive API's CoreTaskRunner
		// runs function_name with apply from task_type and apply_local;
		// one built on a TaskRunner reads the name only.
		for _, t := range task.Tasks {
			resp.Tasks = append(resp.Tasks, &aggregatorpb.Task{Name: t.Name, FunctionName: t.Function, TaskType: t.Type, ApplyLocal: t.ApplyLocal})
		}
	}
	return resp, nil
}

// GetAggregatedTensor returns one tensor of the global model of the round
// being trained, or its delta from the round before, as OpenFL's
// aggregator encodes it: the requested round, the requested tags with the
// lossless codec's "compressed" (tensor.RequestedForm), lossless, and the
// shape in one MetadataProto.
func (s *aggregatorService) GetAggregatedTensor(ctx context.Context, req *aggregatorpb.GetAggregatedTensorRequest) (*aggregatorpb.GetAggregatedTensorResponse, error) {
	h := req.GetHeader()
	if err := s.checkEnvoy(ctx, "GetAggregatedTensor", h.GetSender()); err != nil {
		return nil, err
	}
	round := int(req.GetRoundNumber())
	form, tags, err := tensor.RequestedForm(req.GetTags(), round)
	if err != nil {
		return nil, fmt.Errorf("%w: tensor %q: %w", api.ErrInvalid, req.GetTensorName(), err)
	}
	span, data, err := s.d.GlobalTensor(ctx, h.GetFederationUuid(), h.GetSender(), round, req.GetTensorName(), form)
	if err != nil {
		return nil, err
	}
	s.d.Prometheus().Sent(metrics.KindModels, int64(len(data)))
	nt := tensor.NamedTensor(span, data, tags, false)
	nt.RoundNumber = int32(round)
	return &aggregatorpb.GetAggregatedTensorResponse{
		Header:      replyHeader(h),
		RoundNumber: int32(round),
		Tensor:      nt,
	}, nil
}

// SendLocalTaskResults receives an envoy's serialized TaskResults as a
// stream of chunks and hands them to the domain, which checks who sends
// them before it stores a byte, then checks, stores and records them; the
// round's aggregation, when this report completes it, runs in the
// background.
func (s *aggregatorService) SendLocalTaskResults(stream aggregatorpb.Aggregator_SendLocalTaskResultsServer) error {
	ctx := stream.Context()
	const method = "SendLocalTaskResults"
	// Only envoys may make the director read a stream (the table, before
	// this handler runs); which envoy is checked against the results'
	// header, the stream's first bytes.
	pr := newPacedRecv(stream)
	defer pr.stop()
	verify := func(envoy string) error { return s.checkEnvoy(ctx, method, envoy) }
	m, resumable, err := resultsResume(ctx)
	if err != nil {
		return err
	}
	var rep director.Report
	if resumable {
		rep, err = s.d.ReportResultsResumable(ctx, &chunkReader{recv: pr.recv}, verify, m)
	} else {
		rep, err = s.d.ReportResults(ctx, &chunkReader{recv: pr.recv}, verify)
	}
	if wrong := (*director.ErrWrongOffset)(nil); errors.As(err, &wrong) {
		// The envoy resends from the byte the director holds.
		grpc.SetTrailer(ctx, metadata.Pairs(api.MDOffset, strconv.FormatInt(wrong.Held, 10)))
	}
	if err != nil {
		return err
	}
	return stream.SendAndClose(&aggregatorpb.SendLocalTaskResultsResponse{
		Header: replyHeader(&aggregatorpb.MessageHeader{Sender: rep.Envoy, Receiver: rep.Receiver, FederationUuid: rep.Experiment, SingleColCertCommonName: rep.CommonName}),
	})
}

// chunkReader reads a DataStream's bytes, refusing a chunk whose size
// differs from its bytes.
type chunkReader struct {
	recv func() (*basepb.DataStream, error)
	buf  []byte
	i    int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	for len(c.buf) == 0 {
		chunk, err := c.recv()
		if err != nil {
			return 0, err // io.EOF at the stream's end
		}
		if int(chunk.GetSize()) != len(chunk.GetNpbytes()) {
			return 0, fmt.Errorf("%w: broken stream: chunk %d has size %d but %d bytes", api.ErrInvalid, c.i, chunk.GetSize(), len(chunk.GetNpbytes()))
		}
		c.buf = chunk.GetNpbytes()
		c.i++
	}
	n := copy(p, c.buf)
	c.buf = c.buf[n:]
	return n, nil
}

// WriteTo writes the rest of the stream to w a chunk at a time, sparing
// io.Copy's copy through a buffer of its own.
func (c *chunkReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		if len(c.buf) > 0 {
			n, err := w.Write(c.buf)
			total += int64(n)
			c.buf = c.buf[n:]
			if err != nil {
				return total, err
			}
		}
		if _, err := c.Read(nil); err != nil {
			if errors.Is(err, io.EOF) {
				return total, nil
			}
			return total, err
		}
	}
}

// GetMetricStream is the Director service's, on the aggregator's wire.
func (s *aggregatorService) GetMetricStream(req *aggregatorpb.GetMetricStreamRequest, stream aggregatorpb.Aggregator_GetMetricStreamServer) error {
	return s.d.StreamMetrics(stream.Context(), s.caller(stream.Context()), req.GetExperimentName(), func(m store.Metric) error {
		return stream.Send(&aggregatorpb.GetMetricStreamResponse{
			MetricOrigin: m.Origin, TaskName: m.Task, MetricName: m.Name, MetricValue: float32(m.Value), Round: uint32(m.Round),
		})
	})
}

// GetTrainedModel is the Director service's, on the aggregator's wire.
func (s *aggregatorService) GetTrainedModel(ctx context.Context, req *aggregatorpb.GetTrainedModelRequest) (*aggregatorpb.TrainedModelResponse, error) {
	b, release, err := s.trainedModel(ctx, req.GetExperimentName(), req.GetModelType() == aggregatorpb.GetTrainedModelRequest_BEST_MODEL)
	if err != nil {
		return nil, err
	}
	resp := &aggregatorpb.TrainedModelResponse{}
	resp.ProtoReflect().SetUnknown(b)
	// The hold ends once the reply is written, or the call is gone.
	s.holds.hold(ctx, resp, release)
	return resp, nil
}

// GetExperimentDescription is the Director service's, on the aggregator's wire.
func (s *aggregatorService) GetExperimentDescription(ctx context.Context, req *aggregatorpb.GetExperimentDescriptionRequest) (*aggregatorpb.GetExperimentDescriptionResponse, error) {
	desc, err := s.describe(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	return &aggregatorpb.GetExperimentDescriptionResponse{Experiment: desc}, nil
}
