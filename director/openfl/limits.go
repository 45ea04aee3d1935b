package openfl

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/pki"
)

// Receive limits.
//
// A message is refused by size before it is read only where gRPC compares
// its 5-byte length prefix with the stream's limit: past the limit gRPC
// answers ResourceExhausted without reading the body or granting the
// flow-control window for it, so the peer can have sent no more than one
// stream window (transport.StreamWindowSize). Every check after that
// (an interceptor's proto.Size, a codec) comes once gRPC has buffered the
// whole message. gRPC has that limit per server only (MaxRecvMsgSize), so
// the server's is the largest message any method but SetNewExperiment
// takes: a chunk of task results.
//
// SetNewExperiment needs more: OpenFL frontends repeat the initial model
// (model_proto) in every message of the upload, up to OpenFL's 2^30 bytes.
// Its interceptor (capStream) checks that the caller may submit and takes
// a place among the uploads in progress before a byte of the stream is
// read, then reads the stream's messages itself (bigStream) with OpenFL's
// limit, through the methods grpc-go's own parser calls on its server
// transport stream.
const (
	// maxUnaryRequest caps every unary request (names, headers, shard info).
	maxUnaryRequest = 1 << 20
	// maxChunkMessage caps one DataStream message of SendLocalTaskResults.
	maxChunkMessage = api.ChunkSize + 1<<10
	// maxRecvMessage is the server's receive limit (MaxRecvMsgSize).
	maxRecvMessage = maxChunkMessage
	// maxStreamsPerConn bounds the calls in progress on one connection
	// (HTTP/2's SETTINGS_MAX_CONCURRENT_STREAMS: more wait at the
	// client), so one connection holds at most that many messages of
	// maxRecvMessage bytes. An envoy needs a handful; the heartbeat
	// benchmark drives 64 at once over one connection.
	maxStreamsPerConn = 128
	// maxExperimentMessage caps one message of SetNewExperiment.
	maxExperimentMessage = api.MaxMessageSize

	// maxSubmissions and maxSubmissionsPerCaller bound the SetNewExperiment
	// streams in progress: each may hold a model of maxExperimentMessage
	// bytes in memory.
	maxSubmissions          = 2
	maxSubmissionsPerCaller = 1
	// maxArchivesPerCaller bounds one envoy's downloads of experiment
	// archives at once; they stream from the file a chunk at a time, so
	// all envoys together are not bounded beyond the connection's.
	maxArchivesPerCaller = 2
)

// capUnary refuses unary requests larger than maxUnaryRequest (the server
// has read them already, up to maxRecvMessage bytes).
func capUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if m, ok := req.(proto.Message); ok {
		if n := proto.Size(m); n > maxUnaryRequest {
			return nil, fmt.Errorf("%w: %s: request of %d bytes exceeds the cap of %d", api.ErrTooLarge, info.FullMethod, n, maxUnaryRequest)
		}
	}
	return handler(ctx, req)
}

// capStream admits a SetNewExperiment stream, before it reads any of it,
// from a caller authStream let through, while fewer than the bounded
// number of uploads are in progress; the stream then reads messages up to
// maxExperimentMessage. Other streams keep the server's limit.
func (s *service) capStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if info.FullMethod != directorpb.Director_SetNewExperiment_FullMethodName {
		return handler(srv, ss)
	}
	// authStream, earlier in the chain, has admitted the caller.
	ctx := ss.Context()
	release, err := s.submissions.Enter(s.callerKey(ctx))
	if err != nil {
		return err
	}
	defer release()
	// The headers tell the frontend it was admitted (and a test when).
	if err := ss.SendHeader(nil); err != nil {
		return err
	}
	if r, ok := grpc.ServerTransportStreamFromContext(ctx).(transportReader); ok {
		ss = &bigStream{ServerStream: ss, r: r, limit: maxExperimentMessage}
	}
	// Otherwise (a grpc-go whose transport stream reads differently) the
	// server's limit holds: TestSetNewExperimentLargeModel fails.
	return handler(srv, ss)
}

// callerKey names a caller for the per-caller bounds: its certificate's
// name with TLS, its host without (a director without TLS trusts every
// caller, and listens on loopback only).
func (s *service) callerKey(ctx context.Context) string {
	if s.tls {
		if id, ok := pki.FromContext(ctx); ok {
			return id.Kind + ":" + id.Name
		}
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		if host, _, err := net.SplitHostPort(p.Addr.String()); err == nil {
			return host
		}
		return p.Addr.String()
	}
	return ""
}

// transportReader is what grpc-go's parser calls on a server transport
// stream to read a message: the 5-byte prefix (compressed flag, length),
// then the length's bytes, for which the transport grants window only
// then.
type transportReader interface {
	ReadMessageHeader(header []byte) error
	Read(n int) (mem.BufferSlice, error)
	RecvCompress() string
}

// bigStream reads a client stream's messages with its own size limit, as
// grpc-go's parser does with the server's.
type bigStream struct {
	grpc.ServerStream
	r     transportReader
	limit int
}

func (s *bigStream) RecvMsg(m any) error {
	pm, ok := m.(proto.Message)
	if !ok {
		return status.Errorf(codes.Internal, "grpc: %T is not a protobuf message", m)
	}
	var hdr [5]byte
	if err := s.r.ReadMessageHeader(hdr[:]); err != nil {
		return s.recvErr(err)
	}
	length := binary.BigEndian.Uint32(hdr[1:])
	if int64(length) > int64(s.limit) {
		return status.Errorf(codes.ResourceExhausted, "grpc: received message larger than max (%d vs. %d)", length, s.limit)
	}
	data, err := s.r.Read(int(length))
	if err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return s.recvErr(err)
	}
	defer data.Free()
	switch hdr[0] {
	case 0:
	case 1:
		data, err = s.decompress(data)
		if err != nil {
			return err
		}
		defer data.Free()
	default:
		return status.Errorf(codes.Internal, "grpc: received unexpected payload format %d", hdr[0])
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	if err := proto.Unmarshal(buf.ReadOnlyData(), pm); err != nil {
		return status.Errorf(codes.Internal, "grpc: failed to unmarshal the received message: %v", err)
	}
	return nil
}

// decompress inflates a compressed message, refusing one that inflates
// past the limit.
func (s *bigStream) decompress(data mem.BufferSlice) (mem.BufferSlice, error) {
	name := s.r.RecvCompress()
	c := encoding.GetCompressor(name)
	if c == nil {
		return nil, status.Errorf(codes.Unimplemented, "grpc: decompressor is not installed for grpc-encoding %q", name)
	}
	r := data.Reader()
	defer r.Close()
	dr, err := c.Decompress(r)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "grpc: failed to decompress the received message: %v", err)
	}
	out, err := mem.ReadAll(io.LimitReader(dr, int64(s.limit)+1), mem.DefaultBufferPool())
	if err != nil {
		out.Free()
		return nil, status.Errorf(codes.Internal, "grpc: failed to decompress the received message: %v", err)
	}
	if out.Len() > s.limit {
		out.Free()
		return nil, status.Errorf(codes.ResourceExhausted, "grpc: received message after decompression larger than max %d", s.limit)
	}
	return out, nil
}

// recvErr turns a transport's read error into what grpc-go's RecvMsg
// returns: io.EOF at the stream's end, a status otherwise.
func (s *bigStream) recvErr(err error) error {
	if errors.Is(err, io.EOF) {
		return io.EOF
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	if ctxErr := s.Context().Err(); ctxErr != nil {
		return status.FromContextError(ctxErr).Err()
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return status.Error(codes.Internal, err.Error())
	}
	return status.Error(codes.Unavailable, err.Error())
}
