package openfl

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/basepb"
	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/director"
	"github.com/fedplane/fedplane/job"
	"github.com/fedplane/fedplane/store"
)

// This file holds the OpenFL frontend RPCs of the Director service (and
// the helpers the Aggregator service's copies of them share). The
// experiment "name" a frontend passes may be a job id, a unique id prefix
// of at least 8 characters, or a job name (the newest job of that name):
// see director.LookupExperiment.

// GetExperimentsList lists every experiment the caller may see, with real
// progress, in one query.
func (s *directorService) GetExperimentsList(ctx context.Context, _ *directorpb.GetExperimentsListRequest) (*directorpb.GetExperimentsListResponse, error) {
	exps, err := s.d.VisibleExperiments(ctx, s.caller(ctx))
	if err != nil {
		return nil, err
	}
	out := &directorpb.GetExperimentsListResponse{}
	for _, e := range exps {
		done, total := s.d.Progress(e)
		out.Experiments = append(out.Experiments, &directorpb.ExperimentListItem{
			Name: e.ID, Status: string(e.Status), CollaboratorsAmount: uint32(s.d.PlannedEnvoys(e)), TasksAmount: uint32(taskCount(s.d.RoundTasks(e))),
			Progress: fraction(done, total),
		})
	}
	return out, nil
}

func fraction(done, total int) float32 {
	if total == 0 {
		return 0
	}
	return float32(done) / float32(total)
}

// describe builds the OpenFL description of an experiment.
func (s *service) describe(ctx context.Context, name string) (*basepb.ExperimentDescription, error) {
	e, err := s.d.LookupExperiment(ctx, s.caller(ctx), name)
	if err != nil {
		return nil, err
	}
	parts, err := s.d.Participants(ctx, e)
	if err != nil {
		return nil, err
	}
	done, total := s.d.Progress(e)
	desc := &basepb.ExperimentDescription{
		Name: e.ID, Status: string(e.Status), Progress: fraction(done, total), TotalRounds: uint32(total), CurrentRound: uint32(done),
	}
	tasks, fromPlan := s.d.RoundTasks(e)
	for _, t := range tasks {
		what := "runs the job's train.command on the round's global model"
		if fromPlan {
			what = fmt.Sprintf("%s task of the plan's task group (function %s)", t.Type, t.Function)
		}
		desc.Tasks = append(desc.Tasks, &basepb.TaskDescription{Name: t.Name, Description: what})
	}
	modelStatus := "pending"
	if done > 0 {
		modelStatus = "ready"
	}
	desc.DownloadStatuses = &basepb.DownloadStatuses{Models: []*basepb.DownloadStatus{
		{Name: director.ModelBest, Status: modelStatus}, {Name: director.ModelLast, Status: modelStatus},
	}}
	for _, p := range parts {
		cd := &basepb.CollaboratorDescription{Name: p.Envoy, Status: string(p.Status), Round: uint32(p.Round), Progress: fraction(p.Round, total)}
		switch p.Status {
		case api.EnvoyTraining:
			cd.CurrentTask = director.TaskTrain
		case api.EnvoyAssigned, api.EnvoyReported:
			cd.NextTask = director.TaskTrain
		}
		desc.Collaborators = append(desc.Collaborators, cd)
	}
	return desc, nil
}

// GetExperimentDescription describes one experiment: rounds, progress and
// each participant's state.
func (s *directorService) GetExperimentDescription(ctx context.Context, req *directorpb.GetExperimentDescriptionRequest) (*directorpb.GetExperimentDescriptionResponse, error) {
	desc, err := s.describe(ctx, req.GetName())
	if err != nil {
		return nil, err
	}
	return &directorpb.GetExperimentDescriptionResponse{Experiment: desc}, nil
}

// GetExperimentStatus returns an experiment's status string.
func (s *directorService) GetExperimentStatus(ctx context.Context, req *directorpb.GetExperimentStatusRequest) (*directorpb.GetExperimentStatusResponse, error) {
	e, err := s.d.LookupExperiment(ctx, s.caller(ctx), req.GetExperimentName())
	if err != nil {
		return nil, err
	}
	return &directorpb.GetExperimentStatusResponse{ExperimentStatus: string(e.Status)}, nil
}

// GetTrainedModel returns the best or the last model of an experiment.
func (s *directorService) GetTrainedModel(ctx context.Context, req *directorpb.GetTrainedModelRequest) (*directorpb.TrainedModelResponse, error) {
	b, release, err := s.trainedModel(ctx, req.GetExperimentName(), req.GetModelType() == directorpb.GetTrainedModelRequest_BEST_MODEL)
	if err != nil {
		return nil, err
	}
	resp := &directorpb.TrainedModelResponse{}
	resp.ProtoReflect().SetUnknown(b)
	// The hold ends once the reply is written, or the call is gone.
	s.holds.hold(ctx, resp, release)
	return resp, nil
}

// GetMetricStream streams an experiment's metrics as they arrive and ends
// when the experiment ends.
func (s *directorService) GetMetricStream(req *directorpb.GetMetricStreamRequest, stream directorpb.Director_GetMetricStreamServer) error {
	return s.d.StreamMetrics(stream.Context(), s.caller(stream.Context()), req.GetExperimentName(), func(m store.Metric) error {
		return stream.Send(&directorpb.GetMetricStreamResponse{
			MetricOrigin: m.Origin, TaskName: m.Task, MetricName: m.Name, MetricValue: float32(m.Value), Round: uint32(m.Round),
		})
	})
}

// RemoveExperimentData deletes an experiment that is not running, with its
// files.
func (s *directorService) RemoveExperimentData(ctx context.Context, req *directorpb.RemoveExperimentRequest) (*directorpb.RemoveExperimentResponse, error) {
	who := s.caller(ctx)
	e, err := s.d.LookupExperiment(ctx, who, req.GetExperimentName())
	if err != nil {
		return nil, err
	}
	if err := s.d.DeleteJob(ctx, who, e); err != nil {
		return nil, err
	}
	return &directorpb.RemoveExperimentResponse{Acknowledgement: true}, nil
}

// SetNewExperiment takes an OpenFL frontend's upload: the archive from the
// chunks of experiment_data and the initial model from model_proto (Python
// frontends repeat name, collaborators and the model in every message: the
// first non-empty one counts). The archive is a fedplane job (a job.json
// at its top) or an OpenFL workspace (its plan/plan.yaml at the top, whose
// task group the collaborators run); the experiment's name and
// collaborators replace job.json's name and envoys. A name already used, or a collaborator that
// never registered, is refused.
func (s *directorService) SetNewExperiment(stream directorpb.Director_SetNewExperimentServer) error {
	ctx := stream.Context()
	who := s.caller(ctx)
	var sub director.Submission
	u, err := s.d.ReceiveArchive(func(w io.Writer) (int64, error) {
		bw := bufio.NewWriterSize(w, 1<<20)
		var n int64
		for i := 0; ; i++ {
			info, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return n, bw.Flush()
			}
			if err != nil {
				return n, err
			}
			if sub.Name == "" {
				sub.Name = info.GetName()
			}
			if len(sub.Envoys) == 0 {
				sub.Envoys = info.GetCollaboratorNames()
			}
			if sub.Model == nil && len(info.GetModelProto().GetTensors()) > 0 {
				sub.Model = info.GetModelProto()
			}
			chunk := info.GetExperimentData()
			if int(chunk.GetSize()) != len(chunk.GetNpbytes()) {
				return n, fmt.Errorf("%w: broken archive: chunk %d has size %d but %d bytes", api.ErrInvalid, i, chunk.GetSize(), len(chunk.GetNpbytes()))
			}
			k, err := bw.Write(chunk.GetNpbytes())
			n += int64(k)
			if err != nil {
				return n, err
			}
		}
	})
	if err != nil {
		return err
	}
	sub.Frontend = true
	if _, err := s.d.SubmitJob(ctx, who, u, sub); err != nil {
		return err
	}
	return stream.SendAndClose(&directorpb.SetNewExperimentResponse{Accepted: true})
}

func taskCount(tasks []job.Task, _ bool) int { return len(tasks) }
