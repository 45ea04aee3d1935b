package openfl

import (
	"context"
	"errors"
	"fmt"
	"io"

	"google.golang.org/grpc/metadata"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/logspb"
)

// logsService implements fedplane.logs.TrainingLogs, fedplane's own
// service beside OpenFL's on the gRPC port: envoys whose site shares
// training logs upload them here. OpenFL peers never call it.
type logsService struct {
	logspb.UnimplementedTrainingLogsServer
	*service
}

// Bounds on training log uploads: one per envoy at a time, and a few for
// all envoys together; each holds at most one message in memory.
const (
	maxLogUploads          = 16
	maxLogUploadsPerCaller = 1
)

// sharesLogs reads the heartbeat's fedplane-share-logs header.
func sharesLogs(ctx context.Context) bool {
	md, _ := metadata.FromIncomingContext(ctx)
	v := md.Get(api.MDShareLogs)
	return len(v) == 1 && v[0] == "true"
}

// SendTrainingLog stores the log an envoy sends for one of its
// experiments. The caller is an envoy (authStream); its certificate must
// name the envoy the header names, and the size the header announces must
// be within api.MaxSharedLog, before any of the log is read. The stream is
// paced like task results: one that stalls or trickles is dropped.
func (s *logsService) SendTrainingLog(stream logspb.TrainingLogs_SendTrainingLogServer) error {
	ctx := stream.Context()
	leave, err := s.logUploads.Enter(s.callerKey(ctx))
	if err != nil {
		return err
	}
	defer leave()
	pr := newPaced(stream.Recv, func(m *logspb.TrainingLogChunk) int { return len(m.GetData()) }, "training log")
	defer pr.stop()
	first, err := pr.recv()
	if err != nil {
		return err
	}
	h := first.GetHeader()
	if h == nil {
		return fmt.Errorf("%w: the first message of a training log must carry its header", api.ErrInvalid)
	}
	if err := api.ValidateName("envoy_name", h.GetEnvoyName()); err != nil {
		return err
	}
	if err := s.checkEnvoy(ctx, "SendTrainingLog", h.GetEnvoyName()); err != nil {
		return err
	}
	size := h.GetSize()
	err = s.d.ReceiveLog(ctx, h.GetEnvoyName(), h.GetExperimentName(), size, func(w io.Writer) (int64, error) {
		var n int64
		data := first.GetData()
		for {
			if n += int64(len(data)); n > size {
				return n, fmt.Errorf("%w: training log longer than the %d bytes announced", api.ErrInvalid, size)
			}
			if _, err := w.Write(data); err != nil {
				return n, err
			}
			msg, err := pr.recv()
			if errors.Is(err, io.EOF) {
				return n, nil
			}
			if err != nil {
				return n, err
			}
			if msg.GetHeader() != nil {
				return n, fmt.Errorf("%w: a training log carries one header, in its first message", api.ErrInvalid)
			}
			data = msg.GetData()
		}
	})
	if err != nil {
		return err
	}
	return stream.SendAndClose(&logspb.SendTrainingLogResponse{})
}
