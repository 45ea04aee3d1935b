package director

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/basepb"
	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/job"
	"github.com/fedplane/fedplane/store"
	"github.com/fedplane/fedplane/tensor"
)

// This file holds the OpenFL frontend RPCs of the Director service (and the
// helpers the Aggregator service's copies of them share). The experiment
// "name" a frontend passes may be a job id, a unique id prefix of at least 8
// characters, or a job name (the newest job of that name).

// visibleExperiment resolves a frontend's experiment name among those the
// caller may see; others are NotFound, as if they did not exist.
func (d *Director) visibleExperiment(ctx context.Context, name string) (store.Experiment, error) {
	e, err := d.lookupExperiment(ctx, name)
	if err != nil {
		return e, err
	}
	if !mayView(d.grpcCaller(ctx), e) {
		return store.Experiment{}, fmt.Errorf("%w: no experiment %q", api.ErrNotFound, name)
	}
	return e, nil
}

// lookupExperiment resolves a frontend's experiment name.
func (d *Director) lookupExperiment(ctx context.Context, name string) (store.Experiment, error) {
	if name == "" {
		return store.Experiment{}, fmt.Errorf("%w: experiment name is empty", api.ErrInvalid)
	}
	if e, err := d.db.GetExperiment(ctx, name); err == nil {
		return e, nil
	}
	if len(name) >= minIDPrefix {
		if e, err := d.db.FindExperiment(ctx, name); err == nil {
			return e, nil
		}
	}
	exps, err := d.db.ListExperiments(ctx, store.ExperimentFilter{Name: name, Max: 1})
	if err != nil {
		return store.Experiment{}, err
	}
	if len(exps) == 0 {
		return store.Experiment{}, fmt.Errorf("%w: no experiment %q", api.ErrNotFound, name)
	}
	return exps[0], nil
}

// progress is the share of a job's rounds aggregated so far.
func (d *Director) progress(ctx context.Context, e store.Experiment) (done, total int, frac float32) {
	m, err := manifestOf(e)
	if err != nil || m.Rounds == 0 {
		return 0, 0, 0
	}
	rounds, err := d.db.Rounds(ctx, e.ID)
	if err == nil && len(rounds) > 0 {
		done = rounds[len(rounds)-1].Round
	}
	if e.Status == api.JobFinished {
		done = m.Rounds
	}
	return done, m.Rounds, float32(done) / float32(m.Rounds)
}

// GetExperimentsList lists every experiment with real progress.
func (s *directorService) GetExperimentsList(ctx context.Context, _ *directorpb.GetExperimentsListRequest) (*directorpb.GetExperimentsListResponse, error) {
	exps, err := s.d.db.ListExperiments(ctx, store.ExperimentFilter{NewestLast: true})
	if err != nil {
		return nil, toStatus(ctx, s.d.log, "GetExperimentsList", err)
	}
	out := &directorpb.GetExperimentsListResponse{}
	who := s.d.grpcCaller(ctx)
	for _, e := range exps {
		if !mayView(who, e) {
			continue
		}
		parts, err := s.d.db.ExperimentEnvoys(ctx, e.ID)
		if err != nil {
			return nil, toStatus(ctx, s.d.log, "GetExperimentsList", err)
		}
		n := len(parts)
		if n == 0 {
			if m, err := manifestOf(e); err == nil {
				n = m.Participants()
			}
		}
		_, _, frac := s.d.progress(ctx, e)
		out.Experiments = append(out.Experiments, &directorpb.ExperimentListItem{
			Name: e.ID, Status: string(e.Status), CollaboratorsAmount: uint32(n), TasksAmount: 1, Progress: frac,
		})
	}
	return out, nil
}

// describe builds the OpenFL description of an experiment.
func (d *Director) describe(ctx context.Context, name string) (*basepb.ExperimentDescription, error) {
	e, err := d.visibleExperiment(ctx, name)
	if err != nil {
		return nil, err
	}
	parts, err := d.db.ExperimentEnvoys(ctx, e.ID)
	if err != nil {
		return nil, err
	}
	done, total, frac := d.progress(ctx, e)
	desc := &basepb.ExperimentDescription{
		Name: e.ID, Status: string(e.Status), Progress: frac, TotalRounds: uint32(total), CurrentRound: uint32(done),
		Tasks: []*basepb.TaskDescription{{Name: taskTrain, Description: "runs the job's train.command on the round's global model"}},
	}
	modelStatus := "pending"
	if done > 0 {
		modelStatus = "ready"
	}
	desc.DownloadStatuses = &basepb.DownloadStatuses{Models: []*basepb.DownloadStatus{
		{Name: modelBest, Status: modelStatus}, {Name: modelLast, Status: modelStatus},
	}}
	for _, p := range parts {
		cd := &basepb.CollaboratorDescription{Name: p.Envoy, Status: string(p.Status), Round: uint32(p.Round)}
		if total > 0 {
			cd.Progress = float32(p.Round) / float32(total)
		}
		switch p.Status {
		case api.EnvoyTraining:
			cd.CurrentTask = taskTrain
		case api.EnvoyAssigned, api.EnvoyReported:
			cd.NextTask = taskTrain
		}
		desc.Collaborators = append(desc.Collaborators, cd)
	}
	return desc, nil
}

// GetExperimentDescription describes one experiment: rounds, progress and
// each participant's state.
func (s *directorService) GetExperimentDescription(ctx context.Context, req *directorpb.GetExperimentDescriptionRequest) (*directorpb.GetExperimentDescriptionResponse, error) {
	desc, err := s.d.describe(ctx, req.GetName())
	if err != nil {
		return nil, toStatus(ctx, s.d.log, "GetExperimentDescription", err)
	}
	return &directorpb.GetExperimentDescriptionResponse{Experiment: desc}, nil
}

// GetExperimentStatus returns an experiment's status string.
func (s *directorService) GetExperimentStatus(ctx context.Context, req *directorpb.GetExperimentStatusRequest) (*directorpb.GetExperimentStatusResponse, error) {
	e, err := s.d.visibleExperiment(ctx, req.GetExperimentName())
	if err != nil {
		return nil, toStatus(ctx, s.d.log, "GetExperimentStatus", err)
	}
	return &directorpb.GetExperimentStatusResponse{ExperimentStatus: string(e.Status)}, nil
}

// modelProto reads a trained model of an experiment as a ModelProto. It
// holds the whole model in memory, as the message does; a model over the
// gRPC message limit is refused with a pointer to download-job.
func (d *Director) modelProto(ctx context.Context, name string, best bool) (*basepb.ModelProto, error) {
	e, err := d.visibleExperiment(ctx, name)
	if err != nil {
		return nil, err
	}
	which := modelLast
	if best {
		which = modelBest
	}
	r, err := d.trainedModel(ctx, e, which)
	if err != nil {
		return nil, err
	}
	x, f, err := tensor.OpenSafetensors(filepath.Join(d.cfg.DataDir, r.ModelPath))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var total int64
	for _, s := range x.Tensors {
		total += s.Size
	}
	if total > api.MaxMessageSize-(1<<20) {
		return nil, status.Errorf(codes.ResourceExhausted, "the model is %d bytes, over the gRPC message limit; use fladmin download-job", total)
	}
	out := &basepb.ModelProto{}
	for _, s := range x.Tensors {
		data := make([]byte, s.Size)
		if _, err := x.Section(s).ReadAt(data, 0); err != nil && !(errors.Is(err, io.EOF) && s.Size == 0) {
			return nil, fmt.Errorf("read tensor %q: %w", s.Name, err)
		}
		out.Tensors = append(out.Tensors, tensor.NamedTensor(s, data, []string{"model"}, false))
	}
	return out, nil
}

// GetTrainedModel returns the best or the last model of an experiment.
func (s *directorService) GetTrainedModel(ctx context.Context, req *directorpb.GetTrainedModelRequest) (*directorpb.TrainedModelResponse, error) {
	mp, err := s.d.modelProto(ctx, req.GetExperimentName(), req.GetModelType() == directorpb.GetTrainedModelRequest_BEST_MODEL)
	if err != nil {
		return nil, toStatus(ctx, s.d.log, "GetTrainedModel", err)
	}
	return &directorpb.TrainedModelResponse{ModelProto: mp}, nil
}

// GetMetricStream streams an experiment's metrics as they arrive and ends
// when the experiment ends.
func (s *directorService) GetMetricStream(req *directorpb.GetMetricStreamRequest, stream directorpb.Director_GetMetricStreamServer) error {
	return s.d.metricStream(stream.Context(), req.GetExperimentName(), func(m store.Metric) error {
		return stream.Send(&directorpb.GetMetricStreamResponse{
			MetricOrigin: m.Origin, TaskName: m.Task, MetricName: m.Name, MetricValue: float32(m.Value), Round: uint32(m.Round),
		})
	})
}

// metricStream is GetMetricStream of both services: the experiment a
// frontend names, if the caller may see it, streamed through send.
func (d *Director) metricStream(ctx context.Context, name string, send func(store.Metric) error) error {
	e, err := d.visibleExperiment(ctx, name)
	if err == nil {
		err = d.streamMetrics(ctx, e.ID, send)
	}
	return toStatus(ctx, d.log, "GetMetricStream", err)
}

// RemoveExperimentData deletes an experiment that is not running, with its
// files.
func (s *directorService) RemoveExperimentData(ctx context.Context, req *directorpb.RemoveExperimentRequest) (*directorpb.RemoveExperimentResponse, error) {
	e, err := s.d.visibleExperiment(ctx, req.GetExperimentName())
	if err != nil {
		return nil, toStatus(ctx, s.d.log, "RemoveExperimentData", err)
	}
	if err := mayManage(s.d.grpcCaller(ctx), e); err != nil {
		return nil, toStatus(ctx, s.d.log, "RemoveExperimentData", fmt.Errorf("%w: %w", api.ErrNotAllowed, err))
	}
	if err := s.d.deleteJob(ctx, e.ID); err != nil {
		return nil, toStatus(ctx, s.d.log, "RemoveExperimentData", err)
	}
	return &directorpb.RemoveExperimentResponse{Acknowledgement: true}, nil
}

// deleteJob removes a job that is not running: its rows, then its files (a
// crash in between leaves files that start-up removes).
func (d *Director) deleteJob(ctx context.Context, id string) error {
	err := d.db.DeleteExperiment(ctx, id, api.JobInProgress)
	if errors.Is(err, api.ErrConflict) {
		return fmt.Errorf("%w: job %s is running: abort it before deleting it", api.ErrConflict, id)
	}
	if err != nil {
		return err
	}
	if err := os.RemoveAll(filepath.Join(d.cfg.DataDir, experimentsDir, id)); err != nil {
		d.log.ErrorContext(ctx, "remove job files", keyJob, id, keyErr, err)
	}
	d.notify(id) // ends metric streams of the job, which find it gone
	d.log.InfoContext(ctx, "job deleted", keyJob, id)
	return nil
}

// SetNewExperiment takes an OpenFL frontend's upload: the archive from the
// chunks of experiment_data and the initial model from model_proto (Python
// frontends repeat name, collaborators and the model in every message: the
// first non-empty one counts). The archive must be a fedplane job (a
// job.json at its top); the experiment's name and collaborators replace
// job.json's name and envoys. A name already used, or a collaborator that
// never registered, is refused.
func (s *directorService) SetNewExperiment(stream directorpb.Director_SetNewExperimentServer) error {
	d := s.d
	ctx := stream.Context()
	const method = "SetNewExperiment"
	if err := mayRun(d.grpcCaller(ctx), "submit_job"); err != nil {
		return toStatus(ctx, d.log, method, fmt.Errorf("%w: %w", api.ErrNotAllowed, err))
	}
	var (
		name    string
		collabs []string
		model   *basepb.ModelProto
	)
	u, err := d.receiveArchive(func(w io.Writer) (int64, error) {
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
			if name == "" {
				name = info.GetName()
			}
			if len(collabs) == 0 {
				collabs = info.GetCollaboratorNames()
			}
			if model == nil && len(info.GetModelProto().GetTensors()) > 0 {
				model = info.GetModelProto()
			}
			chunk := info.GetExperimentData()
			if int(chunk.GetSize()) != len(chunk.GetNpbytes()) {
				return n, fmt.Errorf("%w: broken archive: chunk %d has size %d but %d bytes", api.ErrInvalid, i, chunk.GetSize(), len(chunk.GetNpbytes()))
			}
			n += int64(len(chunk.GetNpbytes()))
			if n > d.cfg.MaxJobSize {
				return n, fmt.Errorf("%w: archive larger than --max-job-size (%d bytes)", api.ErrInvalid, d.cfg.MaxJobSize)
			}
			if _, err := bw.Write(chunk.GetNpbytes()); err != nil {
				return n, err
			}
		}
	})
	if err != nil {
		return toStatus(ctx, d.log, method, err)
	}
	defer u.discard()
	if err := api.ValidateName("experiment name", name); err != nil {
		return toStatus(ctx, d.log, method, err)
	}
	if len(collabs) == 0 {
		return status.Error(codes.InvalidArgument, "collaborator_names is empty")
	}
	if why := d.unknownEnvoys(collabs); why != "" {
		return status.Error(codes.InvalidArgument, "collaborator_names: "+strings.TrimPrefix(why, `"envoys" `))
	}
	if same, err := d.db.ListExperiments(ctx, store.ExperimentFilter{Name: name, Max: 1}); err != nil {
		return toStatus(ctx, d.log, method, err)
	} else if len(same) > 0 {
		return status.Errorf(codes.AlreadyExists, "an experiment named %q exists (%s)", name, same[0].ID)
	}
	info, err := d.inspectUpload(u)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	m := info.Manifest
	m.Name, m.Envoys, m.MinEnvoys = name, slices.Clone(collabs), 0
	if err := m.Validate(); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	var modelFile *os.File
	var modelSum string
	if model != nil {
		modelFile, modelSum, err = d.writeModelProto(model)
	} else {
		modelFile, modelSum, err = d.extractModel(u.f, u.size, info.Root)
	}
	if err != nil {
		if errors.Is(err, job.ErrInvalid) || errors.Is(err, api.ErrInvalid) {
			return status.Error(codes.InvalidArgument, err.Error())
		}
		return toStatus(ctx, d.log, method, err)
	}
	if _, err := d.storeJob(ctx, u, m, modelFile, modelSum, d.grpcCaller(ctx)); err != nil {
		return toStatus(ctx, d.log, method, err)
	}
	return stream.SendAndClose(&directorpb.SetNewExperimentResponse{Accepted: true})
}

// writeModelProto writes a frontend's initial model as safetensors into a
// temp file, after checking each tensor's encoding.
func (d *Director) writeModelProto(mp *basepb.ModelProto) (*os.File, string, error) {
	var specs []tensor.Span
	data := map[string][]byte{}
	for _, nt := range mp.GetTensors() {
		span, err := tensor.FromNamedTensor(nt)
		if err != nil {
			return nil, "", fmt.Errorf("%w: model_proto: %w", api.ErrInvalid, err)
		}
		if _, dup := data[span.Name]; dup {
			return nil, "", fmt.Errorf("%w: model_proto: tensor %q appears twice", api.ErrInvalid, span.Name)
		}
		specs = append(specs, span)
		data[span.Name] = nt.GetDataBytes()
	}
	slices.SortFunc(specs, func(a, b tensor.Span) int { return strings.Compare(a.Name, b.Name) })
	tmp, err := d.createTemp("model-*.safetensors")
	if err != nil {
		return nil, "", err
	}
	hw := job.NewHashWriter(tmp)
	bw := bufio.NewWriter(hw)
	w, err := tensor.NewSafetensorsWriter(bw, specs, nil)
	if err == nil {
		for _, s := range specs {
			if _, err = w.Write(data[s.Name]); err != nil {
				break
			}
		}
	}
	if err == nil {
		err = w.Close()
	}
	if err == nil {
		err = bw.Flush()
	}
	hw.Close()
	sum := hw.Sum()
	if err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, "", fmt.Errorf("%w: model_proto: %w", api.ErrInvalid, err)
	}
	return tmp, sum, nil
}

// clientID is OpenFL's identity header of a caller without TLS.
func clientID(ctx context.Context) string {
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get("client_id"); len(v) > 0 && v[0] != "" {
			return v[0]
		}
	}
	return "__default__"
}
