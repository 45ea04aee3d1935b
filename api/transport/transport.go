// Package transport holds the gRPC transport options of both ends of
// fedplane's gRPC port: OpenFL's message and metadata limits and fixed
// flow-control windows. It is apart from package api so that what imports
// the wire vocabulary (the store, job) does not link gRPC itself.
package transport

import (
	"google.golang.org/grpc"

	"github.com/fedplane/fedplane/api"
)

// The HTTP/2 flow-control windows of both ends of fedplane's gRPC port.
//
// Fixed windows turn off grpc-go's bandwidth-delay-product estimator. With
// it on, every DATA frame that arrives on a connection at rest starts a
// sample: the receiver sends a WINDOW_UPDATE and a PING, and the peer
// answers with a PING ack. A heartbeat is one small request and one small
// reply on a connection that is quiet in between, so the estimator made
// every heartbeat three round trips instead of one and doubled the
// director's reads and writes per heartbeat (a 10,000-envoy federation at
// rest spends the director's CPU on exactly that). The windows bound what a peer may send ahead of the
// reader; they allocate nothing by themselves. The estimator grows them to
// 16 MiB at most; 4 MiB per stream still lets one stream carry 80 MiB/s
// over a 50 ms round trip (a window per round trip), and bounds what a
// director that falls behind holds per uploading envoy to 8 MiB.
const (
	// StreamWindowSize is the flow-control window of one stream, in bytes.
	StreamWindowSize = 4 << 20

	// ConnWindowSize is the flow-control window of one connection, shared by
	// its streams, in bytes.
	ConnWindowSize = 8 << 20
)

// ServerOptions are the transport options of a server on fedplane's gRPC
// port: OpenFL's message and metadata limits and the fixed windows.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(api.MaxMessageSize),
		grpc.MaxSendMsgSize(api.MaxMessageSize),
		grpc.MaxHeaderListSize(api.MaxMetadataSize),
		grpc.StaticStreamWindowSize(StreamWindowSize),
		grpc.StaticConnWindowSize(ConnWindowSize),
	}
}

// DialOptions are the transport options of a client of fedplane's gRPC
// port (an envoy, a frontend): the same limits and windows as the server's.
// Credentials are the caller's.
func DialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(api.MaxMessageSize),
			grpc.MaxCallSendMsgSize(api.MaxMessageSize),
		),
		grpc.WithMaxHeaderListSize(api.MaxMetadataSize),
		grpc.WithStaticStreamWindowSize(StreamWindowSize),
		grpc.WithStaticConnWindowSize(ConnWindowSize),
	}
}
