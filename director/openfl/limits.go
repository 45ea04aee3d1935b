package openfl

import (
	"context"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/aggregatorpb"
	"github.com/fedplane/fedplane/api/directorpb"
)

// Request size caps. The server's message limit stays OpenFL's 2^30 bytes,
// which frontends need for SetNewExperiment's model_proto; every other
// request is small, and is refused past these caps before any handler runs.
const (
	// maxUnaryRequest caps every unary request (names, headers, shard info).
	maxUnaryRequest = 1 << 20
	// maxChunkMessage caps one DataStream message of SendLocalTaskResults.
	maxChunkMessage = api.ChunkSize + 1<<10
)

// capUnary refuses unary requests larger than maxUnaryRequest.
func capUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if m, ok := req.(proto.Message); ok {
		if n := proto.Size(m); n > maxUnaryRequest {
			return nil, fmt.Errorf("%w: %s: request of %d bytes exceeds the cap of %d", api.ErrTooLarge, info.FullMethod, n, maxUnaryRequest)
		}
	}
	return handler(ctx, req)
}

// capStream caps each message of client streams: chunks of task results
// to maxChunkMessage; SetNewExperiment keeps the server's limit.
func capStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	limit := maxChunkMessage
	switch info.FullMethod {
	case directorpb.Director_SetNewExperiment_FullMethodName:
		return handler(srv, ss)
	case aggregatorpb.Aggregator_SendLocalTaskResults_FullMethodName:
	default:
		limit = maxUnaryRequest
	}
	return handler(srv, &cappedStream{ServerStream: ss, limit: limit, method: info.FullMethod})
}

type cappedStream struct {
	grpc.ServerStream
	limit  int
	method string
}

func (s *cappedStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if pm, ok := m.(proto.Message); ok {
		if n := proto.Size(pm); n > s.limit {
			return fmt.Errorf("%w: %s: message of %d bytes exceeds the cap of %d", api.ErrTooLarge, s.method, n, s.limit)
		}
	}
	return nil
}
