package openfl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/director/metrics"
	"github.com/fedplane/fedplane/store"
)

// directorService implements openfl.director.Director: the envoys' calls
// in this file, the frontends' in frontend.go. RPCs fedplane does not
// serve answer Unimplemented through the embedded type.
type directorService struct {
	directorpb.UnimplementedDirectorServer
	*service
}

// archiveChunk is GetExperimentData's chunk size. Small chunks: gRPC pools
// its buffers only up to 1 MiB, and each stream holds a few chunks; with 50
// envoys fetching at once 2 MiB chunks cost ~6 MiB a stream, 32 KiB ones a
// few hundred KiB, at the same throughput (BENCHMARKS.md). Receivers take
// any size up to api.ChunkSize.
const archiveChunk = 32<<10 - 16

// Caps on an envoy's CUDA device list, stored with its shard info.
const (
	maxDevices     = 64
	maxDeviceField = 256
)

// encodeDevices encodes an envoy's CUDA devices for the store (JSON of
// api.CUDADevice, which list_envoys passes on as is), refusing a list over
// the caps.
func encodeDevices(devs []*directorpb.CudaDeviceInfo) (string, error) {
	if len(devs) > maxDevices {
		return "", fmt.Errorf("%w: node_info.cuda_devices has %d devices, over the cap of %d", api.ErrInvalid, len(devs), maxDevices)
	}
	out := make([]api.CUDADevice, 0, len(devs))
	for i, d := range devs {
		for _, f := range []struct{ name, v string }{
			{"device_utilization", d.GetDeviceUtilization()}, {"cuda_driver_version", d.GetCudaDriverVersion()},
			{"cuda_version", d.GetCudaVersion()}, {"name", d.GetName()},
		} {
			if len(f.v) > maxDeviceField {
				return "", fmt.Errorf("%w: node_info.cuda_devices[%d].%s of %d bytes exceeds the cap of %d", api.ErrInvalid, i, f.name, len(f.v), maxDeviceField)
			}
		}
		out = append(out, api.CUDADevice{
			Index: d.GetIndex(), MemoryTotal: d.GetMemoryTotal(), MemoryUtilized: d.GetMemoryUtilized(),
			DeviceUtilization: d.GetDeviceUtilization(), DriverVersion: d.GetCudaDriverVersion(),
			CUDAVersion: d.GetCudaVersion(), Name: d.GetName(),
		})
	}
	b, err := json.Marshal(out)
	return string(b), err
}

func decodeDevices(s string) []*directorpb.CudaDeviceInfo {
	var devs []api.CUDADevice
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

// UpdateShardInfo registers an envoy, or updates the shard info of a known
// one, if its shapes are the federation's.
func (s *directorService) UpdateShardInfo(ctx context.Context, req *directorpb.UpdateShardInfoRequest) (*directorpb.UpdateShardInfoResponse, error) {
	si := req.GetShardInfo()
	if si == nil {
		return nil, fmt.Errorf("%w: shard_info is missing", api.ErrInvalid)
	}
	name := si.GetNodeInfo().GetName()
	if err := api.ValidateName("node_info.name", name); err != nil {
		return nil, err
	}
	if err := s.checkEnvoy(ctx, "UpdateShardInfo", name); err != nil {
		return nil, err
	}
	devs, err := encodeDevices(si.GetNodeInfo().GetCudaDevices())
	if err != nil {
		return nil, err
	}
	why, err := s.d.RegisterEnvoy(ctx, store.Envoy{
		Name:        name,
		Description: si.GetShardDescription(),
		NSamples:    si.GetNSamples(),
		SampleShape: si.GetSampleShape(),
		TargetShape: si.GetTargetShape(),
		Devices:     devs,
	})
	if err != nil {
		return nil, err
	}
	if why != "" {
		// OpenFL's reply has only accepted=false; fedplane envoys print the
		// reason from this header.
		grpc.SetHeader(ctx, metadata.Pairs(api.MDReason, why))
		return &directorpb.UpdateShardInfoResponse{Accepted: false}, nil
	}
	return &directorpb.UpdateShardInfoResponse{Accepted: true}, nil
}

// UpdateEnvoyStatus is the envoy's heartbeat. It answers NotFound for an
// envoy the director does not know, so the envoy registers again.
func (s *directorService) UpdateEnvoyStatus(ctx context.Context, req *directorpb.UpdateEnvoyStatusRequest) (*directorpb.UpdateEnvoyStatusResponse, error) {
	name := req.GetName()
	if err := s.checkEnvoy(ctx, "UpdateEnvoyStatus", name); err != nil {
		return nil, err
	}
	var (
		awaiting string
		err      error
	)
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(api.MDAwaitingApproval); len(v) == 1 && api.ValidateName("experiment", v[0]) == nil {
			awaiting = v[0]
		}
	}
	var devs string
	if len(req.GetCudaDevices()) > 0 {
		// An envoy without GPUs, or fedplane's, sends none: the list of its
		// registration stands.
		if devs, err = encodeDevices(req.GetCudaDevices()); err != nil {
			return nil, err
		}
	}
	stop, err := s.d.Heartbeat(ctx, name, req.GetIsExperimentRunning(), awaiting, devs)
	if err != nil {
		return nil, err
	}
	if stop != "" {
		// The envoy still runs an experiment that has ended (aborted, or
		// failed elsewhere): tell it to stop, in a header OpenFL peers ignore.
		grpc.SetHeader(ctx, metadata.Pairs(api.MDStop, stop))
	}
	if send := s.d.LogHeartbeat(name, sharesLogs(ctx)); len(send) > 0 {
		// An admin asked for these logs (fladmin logs): fedplane envoys
		// that share logs send them now.
		grpc.SetHeader(ctx, metadata.Pairs(api.MDSendLog, strings.Join(send, ",")))
	}
	return &directorpb.UpdateEnvoyStatusResponse{HealthCheckPeriod: s.period}, nil
}

// GetEnvoys lists every registered envoy with its liveness.
func (s *directorService) GetEnvoys(ctx context.Context, _ *directorpb.GetEnvoysRequest) (*directorpb.GetEnvoysResponse, error) {
	views := s.d.Envoys()
	valid := durationpb.New(s.d.Config().OfflineAfter)
	// Which experiment runs where is shown only to callers who may see jobs.
	showExperiments := s.caller(ctx).CanView()
	out := make([]*directorpb.EnvoyInfo, 0, len(views))
	for _, v := range views {
		info := &directorpb.EnvoyInfo{
			ShardInfo:           shardInfoPB(v.Envoy),
			IsOnline:            v.Online,
			IsExperimentRunning: v.ExperimentRunning,
			LastUpdated:         timestamppb.New(v.LastSeen),
			ValidDuration:       valid,
		}
		if showExperiments {
			info.ExperimentName = v.Experiment
		}
		out = append(out, info)
	}
	return &directorpb.GetEnvoysResponse{EnvoyInfos: out}, nil
}

// GetDatasetInfo returns the federation's dataset shapes.
func (s *directorService) GetDatasetInfo(ctx context.Context, _ *directorpb.GetDatasetInfoRequest) (*directorpb.GetDatasetInfoResponse, error) {
	cfg := s.d.Config()
	return &directorpb.GetDatasetInfoResponse{ShardInfo: &directorpb.ShardInfo{
		SampleShape: cfg.SampleShape,
		TargetShape: cfg.TargetShape,
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

// WaitExperiment is the envoy's long poll for work: it returns the id of the
// running experiment the envoy takes part in.
func (s *directorService) WaitExperiment(ctx context.Context, req *directorpb.WaitExperimentRequest) (*directorpb.WaitExperimentResponse, error) {
	name := req.GetCollaboratorName()
	if err := api.ValidateName("collaborator_name", name); err != nil {
		return nil, err
	}
	if err := s.checkEnvoy(ctx, "WaitExperiment", name); err != nil {
		return nil, err
	}
	id, err := s.d.WaitForWork(ctx, name)
	if err != nil {
		return nil, err
	}
	return &directorpb.WaitExperimentResponse{ExperimentName: id}, nil
}

// GetExperimentData streams a running experiment's archive to one of its
// envoys in chunks of archiveChunk bytes, after a header with its size,
// its sha256 and the limits the director checked it against.
func (s *directorService) GetExperimentData(req *directorpb.GetExperimentDataRequest, stream directorpb.Director_GetExperimentDataServer) error {
	ctx := stream.Context()
	id, name := req.GetExperimentName(), req.GetCollaboratorName()
	if err := s.checkEnvoy(ctx, "GetExperimentData", name); err != nil {
		return err
	}
	leave, err := s.archives.Enter(s.callerKey(ctx))
	if err != nil {
		return err
	}
	defer leave()
	f, e, err := s.d.OpenArchive(ctx, id, name)
	if err != nil {
		return err
	}
	defer f.Close()
	lim := s.d.ArchiveLimits()
	hdr := metadata.Pairs(api.MDArchiveSize, strconv.FormatInt(e.ArchiveSize, 10), api.MDArchiveSHA256, e.ArchiveSHA256,
		api.MDMaxUnpacked, strconv.FormatInt(lim.MaxUnpacked, 10), api.MDMaxEntries, strconv.Itoa(lim.MaxFiles),
		api.MDMaxRatio, strconv.FormatInt(lim.MaxRatio, 10), api.MDMaxArchiveRatio, strconv.FormatInt(lim.MaxArchiveRatio, 10))
	if e.Signature != nil {
		hdr.Set(api.MDJobSignature, string(e.Signature))
	}
	off, resumed, err := requestOffset(ctx, e.ArchiveSize)
	if err != nil {
		return err
	}
	if resumed {
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			return fmt.Errorf("seek archive of %s: %w", id, err)
		}
		hdr.Set(api.MDOffset, strconv.FormatInt(off, 10))
	}
	if err := stream.SendHeader(hdr); err != nil {
		return err
	}
	buf := make([]byte, archiveChunk)
	for {
		n, err := io.ReadFull(f, buf)
		if n > 0 {
			if err := stream.Send(&directorpb.ExperimentData{Size: uint32(n), Npbytes: buf[:n]}); err != nil {
				return err
			}
			s.d.Prometheus().Sent(metrics.KindArchives, int64(n))
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// requestOffset reads the api.MDOffset request header of a transfer of
// size bytes: where a resumed transfer starts, and whether the caller asked
// to resume at all. An offset that is not a number from 0 to size is
// refused.
func requestOffset(ctx context.Context, size int64) (int64, bool, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	v := md.Get(api.MDOffset)
	switch {
	case len(v) == 0:
		return 0, false, nil
	case len(v) > 1:
		return 0, false, fmt.Errorf("%w: %d %s headers, want at most one", api.ErrInvalid, len(v), api.MDOffset)
	}
	off, err := strconv.ParseInt(v[0], 10, 64)
	if err != nil || off < 0 || off > size {
		return 0, false, fmt.Errorf("%w: %s %q is not an offset from 0 to the transfer's %d bytes", api.ErrInvalid, api.MDOffset, v[0], size)
	}
	return off, true, nil
}

// SetExperimentFailed fails a running experiment on behalf of one of its
// envoys, with the envoy's name and description as the reason.
func (s *directorService) SetExperimentFailed(ctx context.Context, req *directorpb.SetExperimentFailedRequest) (*directorpb.SetExperimentFailedResponse, error) {
	id, name := req.GetExperimentName(), req.GetCollaboratorName()
	if err := s.checkEnvoy(ctx, "SetExperimentFailed", name); err != nil {
		return nil, err
	}
	if err := s.d.EnvoyFailed(ctx, id, name, req.GetErrorCode(), req.GetErrorDescription()); err != nil {
		return nil, err
	}
	return &directorpb.SetExperimentFailedResponse{}, nil
}
