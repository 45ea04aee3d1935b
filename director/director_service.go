package director

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/store"
)

// directorService implements openfl.director.Director. RPCs of later issues
// answer Unimplemented through the embedded type.
type directorService struct {
	directorpb.UnimplementedDirectorServer
	d *Director
}

// maxNameLen bounds envoy and experiment names, which end up in certificates,
// file names and log lines.
const maxNameLen = 128

// validateName accepts names made of letters, digits and . _ - @, not
// starting with a dot, at most maxNameLen bytes.
func validateName(what, name string) error {
	if name == "" {
		return fmt.Errorf("%w: %s is empty", ErrInvalid, what)
	}
	if len(name) > maxNameLen {
		return fmt.Errorf("%w: %s is %d bytes long, at most %d allowed", ErrInvalid, what, len(name), maxNameLen)
	}
	if name[0] == '.' {
		return fmt.Errorf("%w: %s %q starts with a dot", ErrInvalid, what, name)
	}
	for _, r := range name {
		ok := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-' || r == '@'
		if !ok {
			return fmt.Errorf("%w: %s %q has %q; use letters, digits, '.', '_', '-' or '@'", ErrInvalid, what, name, r)
		}
	}
	return nil
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
		return nil, toStatus(ctx, s.d.log, method, fmt.Errorf("%w: shard_info is missing", ErrInvalid))
	}
	name := si.GetNodeInfo().GetName()
	if err := validateName("node_info.name", name); err != nil {
		return nil, toStatus(ctx, s.d.log, method, err)
	}
	if why := s.d.shapeMismatch(si.GetSampleShape(), si.GetTargetShape()); why != "" {
		s.d.log.WarnContext(ctx, "shard refused", keyEnvoy, name, keyReason, why)
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
	return &directorpb.UpdateShardInfoResponse{Accepted: true}, nil
}

// UpdateEnvoyStatus is the envoy's heartbeat. It answers NotFound for an
// envoy the director does not know, so the envoy registers again.
func (s *directorService) UpdateEnvoyStatus(ctx context.Context, req *directorpb.UpdateEnvoyStatusRequest) (*directorpb.UpdateEnvoyStatusResponse, error) {
	if err := s.d.reg.heartbeat(ctx, req.GetName(), req.GetIsExperimentRunning()); err != nil {
		return nil, toStatus(ctx, s.d.log, "UpdateEnvoyStatus", err)
	}
	return &directorpb.UpdateEnvoyStatusResponse{HealthCheckPeriod: s.d.periodPB}, nil
}

// GetEnvoys lists every registered envoy with its liveness.
func (s *directorService) GetEnvoys(ctx context.Context, _ *directorpb.GetEnvoysRequest) (*directorpb.GetEnvoysResponse, error) {
	views := s.d.reg.list()
	valid := durationpb.New(s.d.cfg.OfflineAfter)
	out := make([]*directorpb.EnvoyInfo, 0, len(views))
	for _, v := range views {
		out = append(out, &directorpb.EnvoyInfo{
			ShardInfo:           shardInfoPB(v.Envoy),
			IsOnline:            v.Online,
			IsExperimentRunning: v.ExperimentRunning,
			LastUpdated:         timestamppb.New(v.LastSeen),
			ValidDuration:       valid,
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
