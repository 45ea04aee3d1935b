package envoy

import (
	"context"
	"fmt"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/directorpb"
)

const (
	// registerTimeout bounds one UpdateShardInfo call.
	registerTimeout = 10 * time.Second
)

// register sends the shard info until the director answers, retrying while
// it is unreachable. A refusal returns an error wrapping ErrRefused with the
// director's reason; any other error from the director (such as
// InvalidArgument) is returned as it is; so is ctx's error once ctx ends.
func (e *Envoy) register(ctx context.Context) error {
	req := &directorpb.UpdateShardInfoRequest{ShardInfo: &directorpb.ShardInfo{
		NodeInfo:         &directorpb.NodeInfo{Name: e.cfg.Name},
		ShardDescription: e.cfg.Description,
		NSamples:         e.cfg.Samples,
		SampleShape:      e.cfg.SampleShape,
		TargetShape:      e.cfg.TargetShape,
	}}
	var (
		resp *directorpb.UpdateShardInfoResponse
		hdr  metadata.MD
		from peer.Peer // the director that answered: one of several replicas
	)
	err := retry(ctx, e.log, "UpdateShardInfo", func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, registerTimeout)
		defer cancel()
		var err error
		hdr = nil
		resp, err = e.dirc.UpdateShardInfo(ctx, req, grpc.Header(&hdr), grpc.Peer(&from))
		return err
	})
	switch {
	case ctx.Err() != nil:
		return ctx.Err()
	case err != nil:
		return fmt.Errorf("register with director: %w", err)
	case !resp.GetAccepted():
		if why := strings.Join(hdr.Get(api.MDReason), "; "); why != "" {
			return fmt.Errorf("%w: %s", ErrRefused, why)
		}
		return ErrRefused
	}
	attrs := []any{api.LogDirector, strings.Join(e.cfg.Directors, ",")}
	if from.Addr != nil {
		attrs = append(attrs, api.LogRemote, from.Addr.String())
	}
	e.log.Info("registered with director", attrs...)
	e.setRegistered(true)
	return nil
}

// setRegistered records whether the director has the envoy registered
// and answers it: /readyz and fedplane_envoy_registered.
func (e *Envoy) setRegistered(v bool) {
	e.registered.Store(v)
	e.prom.setRegistered(v)
}
