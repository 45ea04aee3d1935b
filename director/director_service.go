package director

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/store"
)

// directorService implements openfl.director.Director. RPCs of later issues
// answer Unimplemented through the embedded type.
type directorService struct {
	directorpb.UnimplementedDirectorServer
	d *Director
}

// cudaDevice is the stored form of directorpb.CudaDeviceInfo.
type cudaDevice struct {
	Index             uint64 `json:"index"`
	MemoryTotal       uint64 `json:"memoryTotal"`
	MemoryUtilized    uint64 `json:"memoryUtilized"`
	DeviceUtilization string `json:"deviceUtilization"`
	DriverVersion     string `json:"cudaDriverVersion"`
	CUDAVersion       string `json:"cudaVersion"`
	Name              string `json:"name"`
}

func encodeDevices(devs []*directorpb.CudaDeviceInfo) (string, error) {
	out := make([]cudaDevice, 0, len(devs))
	for _, d := range devs {
		out = append(out, cudaDevice{
			Index: d.GetIndex(), MemoryTotal: d.GetMemoryTotal(), MemoryUtilized: d.GetMemoryUtilized(),
			DeviceUtilization: d.GetDeviceUtilization(), DriverVersion: d.GetCudaDriverVersion(),
			CUDAVersion: d.GetCudaVersion(), Name: d.GetName(),
		})
	}
	b, err := json.Marshal(out)
	return string(b), err
}

func decodeDevices(s string) []*directorpb.CudaDeviceInfo {
	var devs []cudaDevice
	if json.Unmarshal([]byte(s), &devs) != nil {
		return nil
	}
	out := make([]*directorpb.CudaDeviceInfo, 0, len(devs))
	for _, d := range devs {
		out = append(out, &directorpb.CudaDeviceInfo{
			Index: d.Index, MemoryTotal: d.MemoryTotal, MemoryUtilized: d.MemoryUtilized,
			DeviceUtilization: d.DeviceUtilization, CudaDriverVersion: d.DriverVersion,
			CudaVersion: d.CUDAVersion, Name: d.Name,
		})
	}
	return out
}

// shapeMismatch explains why a shard's shapes are refused, or returns "".
func (d *Director) shapeMismatch(sample, target []string) string {
	if len(d.cfg.SampleShape) == 0 && len(d.cfg.TargetShape) == 0 {
		return ""
	}
	if !slices.Equal(sample, d.cfg.SampleShape) {
		return fmt.Sprintf("sample shape %v differs from the federation's %v", sample, d.cfg.SampleShape)
	}
	if !slices.Equal(target, d.cfg.TargetShape) {
		return fmt.Sprintf("target shape %v differs from the federation's %v", target, d.cfg.TargetShape)
	}
	return ""
}

// UpdateShardInfo registers an envoy, or updates the shard info of a known
// one, if its shapes are the federation's.
func (s *directorService) UpdateShardInfo(ctx context.Context, req *directorpb.UpdateShardInfoRequest) (*directorpb.UpdateShardInfoResponse, error) {
	const method = "UpdateShardInfo"
	si := req.GetShardInfo()
	if si == nil {
		return nil, toStatus(ctx, s.d.log, method, fmt.Errorf("%w: shard_info is missing", api.ErrInvalid))
	}
	name := si.GetNodeInfo().GetName()
	if err := api.ValidateName("node_info.name", name); err != nil {
		return nil, toStatus(ctx, s.d.log, method, err)
	}
	if err := s.d.checkEnvoy(ctx, method, name); err != nil {
		return nil, toStatus(ctx, s.d.log, method, err)
	}
	if why := s.d.shapeMismatch(si.GetSampleShape(), si.GetTargetShape()); why != "" {
		s.d.log.WarnContext(ctx, "shard refused", keyEnvoy, name, keyReason, why)
		// OpenFL's reply has only accepted=false; fedplane envoys print the
		// reason from this header.
		grpc.SetHeader(ctx, metadata.Pairs(api.MDReason, why))
		return &directorpb.UpdateShardInfoResponse{Accepted: false}, nil
	}
	devs, err := encodeDevices(si.GetNodeInfo().GetCudaDevices())
	if err != nil {
		return nil, toStatus(ctx, s.d.log, method, err)
	}
	_, err = s.d.reg.register(ctx, store.Envoy{
		Name:        name,
		Description: si.GetShardDescription(),
		NSamples:    si.GetNSamples(),
		SampleShape: si.GetSampleShape(),
		TargetShape: si.GetTargetShape(),
		Devices:     devs,
	})
	if err != nil {
		return nil, toStatus(ctx, s.d.log, method, err)
	}
	s.d.log.InfoContext(ctx, "envoy registered", keyEnvoy, name, "samples", si.GetNSamples())
	s.d.kickScheduler()
	return &directorpb.UpdateShardInfoResponse{Accepted: true}, nil
}

// UpdateEnvoyStatus is the envoy's heartbeat. It answers NotFound for an
// envoy the director does not know, so the envoy registers again.
func (s *directorService) UpdateEnvoyStatus(ctx context.Context, req *directorpb.UpdateEnvoyStatusRequest) (*directorpb.UpdateEnvoyStatusResponse, error) {
	name := req.GetName()
	if err := s.d.checkEnvoy(ctx, "UpdateEnvoyStatus", name); err != nil {
		return nil, toStatus(ctx, s.d.log, "UpdateEnvoyStatus", err)
	}
	changed, err := s.d.reg.heartbeat(ctx, name, req.GetIsExperimentRunning())
	if err != nil {
		return nil, toStatus(ctx, s.d.log, "UpdateEnvoyStatus", err)
	}
	if changed {
		s.d.kickScheduler()
	}
	if req.GetIsExperimentRunning() {
		// The envoy still runs an experiment that has ended (aborted, or
		// failed elsewhere): tell it to stop, in a header OpenFL peers ignore.
		if id := s.d.latestOf(name); id != "" && s.d.runningOf(name) == "" {
			grpc.SetHeader(ctx, metadata.Pairs(api.MDStop, id))
		}
	}
	return &directorpb.UpdateEnvoyStatusResponse{HealthCheckPeriod: s.d.periodPB}, nil
}

// GetEnvoys lists every registered envoy with its liveness.
func (s *directorService) GetEnvoys(ctx context.Context, _ *directorpb.GetEnvoysRequest) (*directorpb.GetEnvoysResponse, error) {
	views := s.d.reg.list()
	valid := durationpb.New(s.d.cfg.OfflineAfter)
	// Which experiment runs where is shown only to callers who may see jobs.
	showExperiments := mayView(s.d.grpcCaller(ctx), store.Experiment{})
	out := make([]*directorpb.EnvoyInfo, 0, len(views))
	for _, v := range views {
		out = append(out, &directorpb.EnvoyInfo{
			ShardInfo:           shardInfoPB(v.Envoy),
			IsOnline:            v.Online,
			IsExperimentRunning: v.ExperimentRunning,
			LastUpdated:         timestamppb.New(v.LastSeen),
			ValidDuration:       valid,
			ExperimentName:      experimentIf(showExperiments, s.d.runningOf(v.Name)),
		})
	}
	return &directorpb.GetEnvoysResponse{EnvoyInfos: out}, nil
}

// GetDatasetInfo returns the federation's dataset shapes.
func (s *directorService) GetDatasetInfo(ctx context.Context, _ *directorpb.GetDatasetInfoRequest) (*directorpb.GetDatasetInfoResponse, error) {
	return &directorpb.GetDatasetInfoResponse{ShardInfo: &directorpb.ShardInfo{
		SampleShape: s.d.cfg.SampleShape,
		TargetShape: s.d.cfg.TargetShape,
	}}, nil
}

func shardInfoPB(e store.Envoy) *directorpb.ShardInfo {
	return &directorpb.ShardInfo{
		NodeInfo:         &directorpb.NodeInfo{Name: e.Name, CudaDevices: decodeDevices(e.Devices)},
		ShardDescription: e.Description,
		NSamples:         e.NSamples,
		SampleShape:      e.SampleShape,
		TargetShape:      e.TargetShape,
	}
}

// errStopping answers long polls when the director shuts down.
var errStopping = status.Error(codes.Unavailable, "director is stopping")

// WaitExperiment is the envoy's long poll for work: it returns the id of the
// running experiment the envoy takes part in (at once when it has one, as
// after a reconnect), never an ended one.
func (s *directorService) WaitExperiment(ctx context.Context, req *directorpb.WaitExperimentRequest) (*directorpb.WaitExperimentResponse, error) {
	name := req.GetCollaboratorName()
	if err := api.ValidateName("collaborator_name", name); err != nil {
		return nil, toStatus(ctx, s.d.log, "WaitExperiment", err)
	}
	if err := s.d.checkEnvoy(ctx, "WaitExperiment", name); err != nil {
		return nil, toStatus(ctx, s.d.log, "WaitExperiment", err)
	}
	id, err := s.d.waitForWork(ctx, name)
	if err != nil {
		return nil, toStatus(ctx, s.d.log, "WaitExperiment", err)
	}
	return &directorpb.WaitExperimentResponse{ExperimentName: id}, nil
}

// GetExperimentData streams a running experiment's archive to one of its
// envoys in chunks of at most api.ChunkSize, after a header with its size
// and sha256.
func (s *directorService) GetExperimentData(req *directorpb.GetExperimentDataRequest, stream directorpb.Director_GetExperimentDataServer) error {
	ctx := stream.Context()
	const method = "GetExperimentData"
	id, name := req.GetExperimentName(), req.GetCollaboratorName()
	if err := s.d.checkEnvoy(ctx, method, name); err != nil {
		return toStatus(ctx, s.d.log, method, err)
	}
	exp := s.d.runningExperiment(id)
	if exp == nil {
		return status.Errorf(codes.NotFound, "no running experiment %q", id)
	}
	if !exp.isParticipant(name) {
		return toStatus(ctx, s.d.log, method, fmt.Errorf("%w: %s is not a participant of experiment %s", api.ErrNotAllowed, name, id))
	}
	e, err := s.d.db.GetExperiment(ctx, id)
	if err != nil {
		return toStatus(ctx, s.d.log, method, err)
	}
	f, err := os.Open(filepath.Join(s.d.cfg.DataDir, e.ArchivePath))
	if err != nil {
		return toStatus(ctx, s.d.log, method, fmt.Errorf("open archive of %s: %w", id, err))
	}
	defer f.Close()
	if err := stream.SendHeader(metadata.Pairs(api.MDArchiveSize, strconv.FormatInt(e.ArchiveSize, 10), api.MDArchiveSHA256, e.ArchiveSHA256)); err != nil {
		return err
	}
	// Small chunks: gRPC pools its buffers only up to 1 MiB, and each
	// stream holds a few chunks; with 50 envoys fetching at once 2 MiB
	// chunks cost ~6 MiB a stream, 32 KiB ones a few hundred KiB, at the
	// same throughput (BENCHMARKS.md). Receivers take any size ≤ 2 MiB.
	buf := make([]byte, archiveChunk)
	for {
		n, err := io.ReadFull(f, buf)
		if n > 0 {
			if err := stream.Send(&directorpb.ExperimentData{Size: uint32(n), Npbytes: buf[:n]}); err != nil {
				return err
			}
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil
		}
		if err != nil {
			return toStatus(ctx, s.d.log, method, fmt.Errorf("read archive of %s: %w", id, err))
		}
	}
}

// SetExperimentFailed fails a running experiment on behalf of one of its
// envoys, with the envoy's name and description as the reason. Terminal
// states are final: a report for an ended experiment changes nothing.
func (s *directorService) SetExperimentFailed(ctx context.Context, req *directorpb.SetExperimentFailedRequest) (*directorpb.SetExperimentFailedResponse, error) {
	const method = "SetExperimentFailed"
	id, name := req.GetExperimentName(), req.GetCollaboratorName()
	if err := s.d.checkEnvoy(ctx, method, name); err != nil {
		return nil, toStatus(ctx, s.d.log, method, err)
	}
	exp := s.d.runningExperiment(id)
	if exp == nil {
		if _, err := s.d.db.GetExperiment(ctx, id); err != nil {
			return nil, toStatus(ctx, s.d.log, method, err)
		}
		return &directorpb.SetExperimentFailedResponse{}, nil // already ended
	}
	if !exp.isParticipant(name) {
		return nil, toStatus(ctx, s.d.log, method, fmt.Errorf("%w: %s is not a participant of experiment %s", api.ErrNotAllowed, name, id))
	}
	desc := req.GetErrorDescription()
	if len(desc) > maxReasonLen {
		desc = desc[:maxReasonLen] + "..."
	}
	reason := fmt.Sprintf("envoy %s failed (code %d): %s", name, req.GetErrorCode(), desc)
	if err := s.d.db.SetEnvoyState(ctx, id, name, api.EnvoyFailed, s.d.currentRound(id), desc); err != nil && !errors.Is(err, api.ErrConflict) {
		return nil, toStatus(ctx, s.d.log, method, err)
	}
	if _, err := s.d.endExperiment(ctx, id, api.JobFailed, reason); err != nil && !errors.Is(err, api.ErrConflict) {
		return nil, toStatus(ctx, s.d.log, method, err)
	}
	return &directorpb.SetExperimentFailedResponse{}, nil
}

// archiveChunk is GetExperimentData's chunk size.
const archiveChunk = 32<<10 - 16

// maxReasonLen bounds a failure description kept with an experiment.
const maxReasonLen = 8 << 10

func experimentIf(show bool, id string) string {
	if show {
		return id
	}
	return ""
}
