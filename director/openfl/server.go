// Package openfl serves OpenFL's openfl.director.Director and
// openfl.aggregator.Aggregator gRPC services (spec/openfl-wire.md) for a
// director.Director, both on one port. Its handlers parse a request, check
// who the caller is, call the domain and format the reply; they return the
// domain's errors, and one interceptor turns them into gRPC statuses
// through api's table of error kinds.
package openfl

import (
	"context"
	"crypto/tls"
	"log/slog"
	"math"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/aggregatorpb"
	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/api/logspb"
	"github.com/fedplane/fedplane/api/transferspb"
	"github.com/fedplane/fedplane/api/transport"
	"github.com/fedplane/fedplane/director"
	"github.com/fedplane/fedplane/director/metrics"
)

// Config configures the services.
type Config struct {
	// TLS, when set, serves mutual TLS: identities and roles then come from
	// client certificates. Without it every caller is trusted, envoys by
	// the names they give and frontends by OpenFL's client_id header, as
	// a director without TLS listens on loopback only.
	TLS *tls.Config
	// Metrics, when set, counts every call by method and code; nil leaves
	// the interceptor out, so a director without --metrics-listen pays
	// nothing for it.
	Metrics *metrics.Director
}

// NewServer returns a gRPC server with fedplane's transport options
// (transport.ServerOptions) but for the receive limit, which is
// maxRecvMessage (limits.go), the request caps, the error mapping, and
// both OpenFL services registered for d; opts come last.
func NewServer(d *director.Director, cfg Config, opts ...grpc.ServerOption) *grpc.Server {
	log := d.Config().Logger
	opts = append(append(transport.ServerOptions(),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.MaxRecvMsgSize(maxRecvMessage),
		grpc.MaxConcurrentStreams(maxStreamsPerConn),
	), opts...)
	if cfg.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg.TLS)))
	}
	svc := &service{
		d: d, log: log, tls: cfg.TLS != nil, period: durationpb.New(d.Config().HealthCheckPeriod),
		submissions: director.NewGate("uploads of experiments", maxSubmissions, maxSubmissionsPerCaller),
		archives:    director.NewGate("experiment archive downloads", math.MaxInt, maxArchivesPerCaller),
		logUploads:  director.NewGate("training log uploads", maxLogUploads, maxLogUploadsPerCaller),
		holds:       &replyHolds{},
	}
	// Who may call what is decided before a handler runs or a request's
	// stream is read (identity before bytes), by the domain's one table;
	// then sizes and gates.
	// The call counter and the audit trail come first, so they see the
	// code a caller gets.
	unary := []grpc.UnaryServerInterceptor{svc.auditUnary, errorsUnary(log), svc.authUnary, capUnary}
	stream := []grpc.StreamServerInterceptor{svc.auditStream, errorsStream(log), svc.authStream, svc.capStream}
	if cfg.Metrics != nil {
		unary = append([]grpc.UnaryServerInterceptor{cfg.Metrics.UnaryInterceptor()}, unary...)
		stream = append([]grpc.StreamServerInterceptor{cfg.Metrics.StreamInterceptor()}, stream...)
	}
	opts = append(opts,
		grpc.ForceServerCodecV2(newReplyCodec(svc.holds)),
		grpc.ChainUnaryInterceptor(unary...),
		grpc.ChainStreamInterceptor(stream...))
	s := grpc.NewServer(opts...)
	directorpb.RegisterDirectorServer(s, &directorService{service: svc})
	aggregatorpb.RegisterAggregatorServer(s, &aggregatorService{service: svc})
	logspb.RegisterTrainingLogsServer(s, &logsService{service: svc})
	transferspb.RegisterTransfersServer(s, &transfersService{service: svc})
	return s
}

// service is what both OpenFL services share: the domain and how callers
// are identified.
type service struct {
	d   *director.Director
	log *slog.Logger
	tls bool
	// period is the heartbeat period as every UpdateEnvoyStatus reply
	// carries it.
	period *durationpb.Duration
	// submissions bounds SetNewExperiment streams in progress, archives
	// an envoy's archive downloads (limits.go); the director's downloads
	// gate bounds the trained models being sent.
	submissions, archives *director.Gate
	// logUploads bounds training log uploads in progress (logs.go).
	logUploads *director.Gate
	// models holds trained models being sent, holds the callers' holds on
	// them until their replies are written (models.go).
	models modelCache
	holds  *replyHolds
}

// errorsUnary maps a unary handler's error to a gRPC status on the way out.
func errorsUnary(log *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		resp, err := handler(ctx, req)
		return resp, toStatus(ctx, log, info.FullMethod, err)
	}
}

// errorsStream maps a stream handler's error to a gRPC status on the way out.
func errorsStream(log *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return toStatus(ss.Context(), log, info.FullMethod, handler(srv, ss))
	}
}

// toStatus maps an error to a gRPC status through api's table of error
// kinds. Statuses pass unchanged (a broken stream's, or the caps'). Errors
// of no kind are logged and returned as Internal, so no internal detail
// leaks to callers.
func toStatus(ctx context.Context, log *slog.Logger, method string, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	code, _, internal := api.Codes(err)
	if internal {
		log.ErrorContext(ctx, "internal error", api.LogMethod, method, api.LogErr, err)
		return status.Error(code, api.InternalMessage)
	}
	return status.Error(code, err.Error())
}
