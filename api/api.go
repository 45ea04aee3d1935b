// Package api is the one home of what fedplane's programs exchange, so that
// no program redeclares it: the OpenFL 1.5/1.6 director, aggregator and base
// proto files under openfl/protocols and the Go code generated from them
// (packages basepb, directorpb and aggregatorpb); fedplane's own service
// beside them, fedplane/protocols/logs.proto (package logspb: training
// logs that sites share); the limits OpenFL peers
// expect on that wire; the admin channel's commands, reply types and meta
// keys; the fedplane-* gRPC metadata keys; job statuses; the name rule; the
// error kinds with their gRPC codes and admin statuses; and the log keys.
package api

const (
	// MaxMessageSize is the gRPC maximum send and receive message length, in
	// bytes, that OpenFL peers configure (2^30).
	MaxMessageSize = 1 << 30

	// MaxMetadataSize is the gRPC maximum header list (metadata) size, in
	// bytes, that OpenFL peers configure (32 MiB).
	MaxMetadataSize = 32 << 20

	// ChunkSize is the largest chunk, in bytes, in which archives and
	// serialized protos travel in DataStream / ExperimentData streams (2 MiB).
	ChunkSize = 2 << 20
)
