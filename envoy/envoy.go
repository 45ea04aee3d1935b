// Package envoy is fedplane's agent at a data site. An Envoy registers its
// shard with the director, keeps it alive with heartbeats, waits for an
// experiment, fetches and unpacks its job archive, and then runs the
// experiment's rounds against the director's Aggregator service: download the
// global model, run the job's training command on the local shard, report the
// trained model and its metrics. The shard itself never leaves the site; only
// its path is handed to the training command.
//
// An Envoy runs one experiment at a time. Everything it writes lives under
// its work directory, in one folder per experiment (named by the experiment
// id) that keeps the training logs once the experiment is over.
package envoy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/aggregatorpb"
	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/api/transport"
	"github.com/fedplane/fedplane/job"
)

// Defaults of Config and of the command line.
const (
	// DefaultDirector is the director's gRPC address when none is given.
	DefaultDirector = "127.0.0.1:50051"
	// DefaultWorkDir holds the envoy's experiments when no work dir is given.
	DefaultWorkDir = "./envoy-work"
	// DefaultKillGrace is how long a training command has between SIGTERM
	// and SIGKILL when it is stopped.
	DefaultKillGrace = 10 * time.Second
)

const (
	// maxNameLen bounds the envoy's name, as the director does.
	maxNameLen = 128
	// directorName is MessageHeader.receiver of everything the envoy sends
	// to the Aggregator service.
	directorName = "director"
	// mdClientID is OpenFL's identity header for callers without TLS.
	mdClientID = "client_id"
)

// ErrRefused is returned by Run when the director refuses the envoy's shard,
// for example because its sample shape is not the federation's. The error
// that wraps it carries the director's reason when it gave one.
var ErrRefused = errors.New("director refused the shard")

// Config configures an Envoy.
type Config struct {
	// Name identifies the envoy to the director: letters, digits, '.', '_',
	// '-' and '@', at most 128 bytes. With TLS it must equal the
	// certificate's common name.
	Name string
	// Director is the director's gRPC address (host:port, or any gRPC
	// target such as "dns:///host:port").
	Director string
	// ShardDir is the local data shard. Only its path is handed to the
	// training command (FEDPLANE_DATA); nothing of it is sent anywhere.
	ShardDir string
	// Description describes the shard to the federation's users.
	Description string
	// WorkDir holds one folder per experiment; it is created (mode 0700)
	// if missing. Empty means DefaultWorkDir.
	WorkDir string
	// Samples is the number of samples in the shard: the FedAvg weight of
	// the envoy's results unless the training command reports n_samples.
	Samples uint64
	// SampleShape and TargetShape describe the shard's samples and targets;
	// the director refuses a shard whose shapes are not the federation's.
	SampleShape, TargetShape []string
	// ArchiveLimits cap what a job archive may unpack to; zero fields take
	// job's defaults. The director's advertised limits apply where they
	// are lower.
	ArchiveLimits job.Limits
	// KillGrace is how long a stopped training command has between SIGTERM
	// and SIGKILL. Zero means DefaultKillGrace.
	KillGrace time.Duration
	// DialOptions are added to the envoy's own (insecure transport
	// credentials and OpenFL's message size limits); a transport credentials
	// option here replaces the insecure default.
	DialOptions []grpc.DialOption
	// Logger receives the envoy's log; nil discards it.
	Logger *slog.Logger
}

// Envoy is the agent of one data shard. Create it with New and start it with
// Run.
type Envoy struct {
	cfg Config
	log *slog.Logger

	// The director's services, set by Run.
	dirc directorpb.DirectorClient
	aggc aggregatorpb.AggregatorClient

	mu  sync.Mutex
	cur *experiment // the experiment taken, nil while idle
}

// New checks cfg, makes ShardDir and WorkDir absolute, and creates WorkDir.
// It does not contact the director.
func New(cfg Config) (*Envoy, error) {
	if err := checkName(cfg.Name); err != nil {
		return nil, err
	}
	if err := checkDirector(cfg.Director); err != nil {
		return nil, err
	}
	// Protobuf strings must be UTF-8, or no request could be sent.
	for _, v := range slices.Concat([]string{cfg.Description}, cfg.SampleShape, cfg.TargetShape) {
		if !utf8.ValidString(v) {
			return nil, fmt.Errorf("description and shapes must be UTF-8 text, got %q", v)
		}
	}
	if cfg.KillGrace < 0 {
		return nil, fmt.Errorf("kill grace %v must not be negative", cfg.KillGrace)
	}
	if cfg.KillGrace == 0 {
		cfg.KillGrace = DefaultKillGrace
	}
	if cfg.ShardDir == "" {
		return nil, errors.New("shard dir is required")
	}
	shard, err := filepath.Abs(cfg.ShardDir)
	if err != nil {
		return nil, fmt.Errorf("shard dir: %w", err)
	}
	fi, err := os.Stat(shard)
	if err != nil {
		return nil, fmt.Errorf("shard dir: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("shard dir %s is not a directory", shard)
	}
	cfg.ShardDir = shard
	if cfg.WorkDir == "" {
		cfg.WorkDir = DefaultWorkDir
	}
	work, err := filepath.Abs(cfg.WorkDir)
	if err != nil {
		return nil, fmt.Errorf("work dir: %w", err)
	}
	if err := os.MkdirAll(work, 0o700); err != nil {
		return nil, fmt.Errorf("work dir: %w", err)
	}
	cfg.WorkDir = work
	cfg.SampleShape = slices.Clone(cfg.SampleShape)
	cfg.TargetShape = slices.Clone(cfg.TargetShape)
	cfg.DialOptions = slices.Clone(cfg.DialOptions)
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Envoy{cfg: cfg, log: log.With(api.LogEnvoy, cfg.Name)}, nil
}

// checkName accepts what the director accepts as an envoy name.
func checkName(name string) error {
	switch {
	case name == "":
		return errors.New("name is required")
	case len(name) > maxNameLen:
		return fmt.Errorf("name is %d bytes long, at most %d allowed", len(name), maxNameLen)
	case name[0] == '.':
		return fmt.Errorf("name %q must not start with a dot", name)
	}
	for _, r := range name {
		if !isNameChar(r) {
			return fmt.Errorf("name %q has %q; use letters, digits, '.', '_', '-' or '@'", name, r)
		}
	}
	return nil
}

func isNameChar(r rune) bool {
	return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' ||
		r == '.' || r == '_' || r == '-' || r == '@'
}

// checkDirector accepts host:port, or a gRPC target with a scheme.
func checkDirector(addr string) error {
	if addr == "" {
		return errors.New("director address is required")
	}
	if strings.Contains(addr, "://") || strings.HasPrefix(addr, "unix:") {
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" || port == "" {
		return fmt.Errorf("director address %q: want host:port", addr)
	}
	return nil
}

// Run registers the shard and serves the director until ctx ends: it
// heartbeats, waits for experiments and runs them one at a time. When ctx
// ends it stops the running training command (SIGTERM to its process group,
// SIGKILL after the kill grace), waits for it, cleans up, and returns nil.
//
// Run returns an error wrapping ErrRefused when the director refuses the
// shard, at start or when the envoy registers again, and an error when the
// director rejects the registration as invalid. Unreachable directors are
// retried, never fatal. Run may be called once.
func (e *Envoy) Run(ctx context.Context) error {
	conn, err := grpc.NewClient(e.cfg.Director, e.dialOptions()...)
	if err != nil {
		return fmt.Errorf("director %s: %w", e.cfg.Director, err)
	}
	defer conn.Close()
	e.dirc = directorpb.NewDirectorClient(conn)
	e.aggc = aggregatorpb.NewAggregatorClient(conn)

	e.cleanStale()
	e.log.Info("envoy starting", api.LogDirector, e.cfg.Director, api.LogShard, e.cfg.ShardDir, api.LogWorkDir, e.cfg.WorkDir)
	if err := e.register(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg    sync.WaitGroup
		fatal error // written by the heartbeat goroutine before it cancels
	)
	wg.Go(func() {
		if err := e.heartbeat(ctx); err != nil {
			fatal = err
			cancel()
		}
	})
	wg.Go(func() { e.work(ctx) })
	wg.Wait()
	if fatal == nil {
		e.log.Info("envoy stopped")
	}
	return fatal
}

// dialOptions are the envoy's own options followed by Config.DialOptions,
// which therefore win.
func (e *Envoy) dialOptions() []grpc.DialOption {
	md := metadata.Pairs(mdClientID, e.cfg.Name)
	withID := func(ctx context.Context) context.Context {
		return metadata.NewOutgoingContext(ctx, metadata.Join(md, metadataOf(ctx)))
	}
	opts := append(transport.DialOptions(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			return invoker(withID(ctx), method, req, reply, cc, opts...)
		}),
		grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
			return streamer(withID(ctx), desc, cc, method, opts...)
		}),
	)
	return append(opts, e.cfg.DialOptions...)
}

// metadataOf returns ctx's outgoing metadata without its client_id, which
// the envoy sets itself.
func metadataOf(ctx context.Context) metadata.MD {
	md, _ := metadata.FromOutgoingContext(ctx)
	md = md.Copy()
	delete(md, mdClientID)
	return md
}
