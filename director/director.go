// Package director is fedplane's coordinating service.
//
// A Director keeps the federation's envoys and experiments in SQLite (package
// store), serves OpenFL's openfl.director.Director and openfl.aggregator.Aggregator
// gRPC services on one port, and answers fladmin on the admin port. Inside the
// package each concern has its own file: the envoy registry (registry.go), the
// Director service (director_service.go), the Aggregator service
// (aggregator_service.go), and the error mapping (errors.go).
package director

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/aggregatorpb"
	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/store"
)

// Defaults of Config.
const (
	DefaultDataDir           = "./fedplane-data"
	DefaultGRPCListen        = "127.0.0.1:50051"
	DefaultAdminListen       = "127.0.0.1:8003"
	DefaultHealthCheckPeriod = 10 * time.Second
	// DefaultStopGrace is how long Run waits for in-flight RPCs to finish
	// before it cuts them off; long polls never finish by themselves.
	DefaultStopGrace = 3 * time.Second
	// dbFile is the SQLite file's name inside the data dir.
	dbFile = "fedplane.db"
)

// Config configures a Director. Zero fields take the Default values.
type Config struct {
	DataDir     string
	GRPCListen  string
	AdminListen string
	// SampleShape and TargetShape are the federation's dataset shapes. A shard
	// must match them to be accepted; when both are empty any shard is.
	SampleShape []string
	TargetShape []string
	// HealthCheckPeriod is the heartbeat period the director hands envoys.
	HealthCheckPeriod time.Duration
	// OfflineAfter is how long after its last heartbeat an envoy counts as
	// offline; 2×HealthCheckPeriod when zero (OpenFL's valid_duration).
	OfflineAfter time.Duration
	// StopGrace bounds the graceful part of a stop.
	StopGrace time.Duration
	// MaxJobSize caps a job archive upload, MaxUnpackedSize its unpacked total.
	MaxJobSize      int64
	MaxUnpackedSize int64
	// AdminMaxConns caps concurrent admin connections.
	AdminMaxConns int
	// AdminIdleTimeout cuts off an admin connection on which nothing moved.
	AdminIdleTimeout time.Duration
	// TLS, when set, serves both ports with mutual TLS (see pki.ServerTLS):
	// identities and roles then come from client certificates.
	TLS *tls.Config
	// Insecure allows serving without TLS on addresses other than loopback.
	Insecure bool
	Version  string
	Logger   *slog.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	if c.GRPCListen == "" {
		c.GRPCListen = DefaultGRPCListen
	}
	if c.AdminListen == "" {
		c.AdminListen = DefaultAdminListen
	}
	if c.HealthCheckPeriod == 0 {
		c.HealthCheckPeriod = DefaultHealthCheckPeriod
	}
	if c.OfflineAfter == 0 {
		c.OfflineAfter = 2 * c.HealthCheckPeriod
	}
	if c.StopGrace == 0 {
		c.StopGrace = DefaultStopGrace
	}
	if c.MaxJobSize == 0 {
		c.MaxJobSize = DefaultMaxJobSize
	}
	if c.MaxUnpackedSize == 0 {
		c.MaxUnpackedSize = DefaultMaxUnpackedSize
	}
	if c.AdminMaxConns == 0 {
		c.AdminMaxConns = DefaultAdminMaxConns
	}
	if c.AdminIdleTimeout == 0 {
		c.AdminIdleTimeout = DefaultAdminIdleTimeout
	}
	if c.Version == "" {
		c.Version = "dev"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

func (c *Config) validate() error {
	if c.HealthCheckPeriod < 0 || c.HealthCheckPeriod < 10*time.Millisecond {
		return fmt.Errorf("health check period %v: must be at least 10ms", c.HealthCheckPeriod)
	}
	if c.OfflineAfter < c.HealthCheckPeriod {
		return fmt.Errorf("offline-after %v: must be at least the health check period (%v)", c.OfflineAfter, c.HealthCheckPeriod)
	}
	if c.MaxJobSize < 0 || c.MaxUnpackedSize < 0 || c.AdminMaxConns < 0 || c.AdminIdleTimeout < 0 {
		return errors.New("size caps, connection caps and timeouts must not be negative")
	}
	if err := c.checkLoopback(); err != nil {
		return err
	}
	for _, s := range [][]string{c.SampleShape, c.TargetShape} {
		for _, d := range s {
			if d == "" {
				return fmt.Errorf("shape %v: empty dimension", s)
			}
		}
	}
	return nil
}

// Director is the coordinating service. New opens its state; Run serves.
type Director struct {
	cfg Config
	log *slog.Logger
	db  *store.DB
	reg *registry
	// periodPB is the heartbeat period as every UpdateEnvoyStatus reply carries it.
	periodPB *durationpb.Duration
	started  time.Time

	rt       *runtime
	kick     chan struct{} // wakes the scheduler
	stopping chan struct{} // closed when Serve begins to stop: ends long polls

	adminDone atomic.Int64 // admin exchanges handled, for tests to wait on
}

// New opens the data dir and the database and loads the registry.
func New(ctx context.Context, cfg Config) (*Director, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	db, err := store.Open(ctx, filepath.Join(cfg.DataDir, dbFile), store.Options{Now: cfg.Now})
	if err != nil {
		return nil, err
	}
	reg, err := newRegistry(ctx, db, cfg.Now, cfg.OfflineAfter, cfg.Logger)
	if err != nil {
		db.Close()
		return nil, err
	}
	d := &Director{
		cfg: cfg, log: cfg.Logger, db: db, reg: reg,
		periodPB: durationpb.New(cfg.HealthCheckPeriod), started: cfg.Now(),
		rt: newRuntime(), kick: make(chan struct{}, 1), stopping: make(chan struct{}),
	}
	if err := d.reconcile(ctx); err != nil {
		db.Close()
		return nil, err
	}
	if err := d.loadRunning(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("load running experiments: %w", err)
	}
	return d, nil
}

// Close closes the database and open models. Call it after Run has returned.
func (d *Director) Close() error {
	d.stopAll()
	return d.db.Close()
}

// NewGRPCServer returns a gRPC server with fedplane's options (OpenFL's
// message size limits, fixed flow-control windows: api.ServerOptions) and
// both OpenFL services registered.
func (d *Director) NewGRPCServer(opts ...grpc.ServerOption) *grpc.Server {
	opts = append(append(api.ServerOptions(),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	), opts...)
	if d.cfg.TLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(d.cfg.TLS)))
	}
	opts = append(opts, grpc.ChainUnaryInterceptor(capUnary), grpc.ChainStreamInterceptor(capStream))
	s := grpc.NewServer(opts...)
	directorpb.RegisterDirectorServer(s, &directorService{d: d})
	aggregatorpb.RegisterAggregatorServer(s, &aggregatorService{d: d})
	return s
}

// Run listens on the configured gRPC and admin addresses and serves until ctx
// ends.
func (d *Director) Run(ctx context.Context) error {
	lis, err := net.Listen("tcp", d.cfg.GRPCListen)
	if err != nil {
		return fmt.Errorf("grpc listen: %w", err)
	}
	adminLis, err := net.Listen("tcp", d.cfg.AdminListen)
	if err != nil {
		lis.Close()
		return fmt.Errorf("admin listen: %w", err)
	}
	return d.Serve(ctx, lis, adminLis)
}

// Serve serves gRPC on lis and the admin exchange on adminLis (if not nil)
// until ctx ends, then stops: gracefully for StopGrace, then by cutting off
// what is left (long polls, streams, uploads). It owns both listeners and the
// background loops, and returns once all are done.
func (d *Director) Serve(ctx context.Context, lis, adminLis net.Listener) error {
	s := d.NewGRPCServer()
	if adminLis != nil && d.cfg.TLS != nil {
		adminLis = tls.NewListener(adminLis, d.cfg.TLS)
	}
	if d.cfg.TLS == nil {
		d.log.Warn("serving without TLS: anyone who can reach the ports is trusted; use director pki and --tls-* beyond loopback")
	}
	adminAddr := "off"
	if adminLis != nil {
		adminAddr = adminLis.Addr().String()
	}
	d.log.Info("director serving",
		keyGRPC, lis.Addr().String(), "admin", adminAddr, keyDataDir, d.cfg.DataDir, keyVersion, d.cfg.Version,
		"health_check_period", d.cfg.HealthCheckPeriod, "offline_after", d.cfg.OfflineAfter)
	if len(d.cfg.SampleShape) == 0 && len(d.cfg.TargetShape) == 0 {
		d.log.Warn("no --sample-shape or --target-shape set: accepting shards of any shape")
	}

	loopCtx, stopLoop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		d.reg.run(loopCtx, tickInterval(d.cfg.HealthCheckPeriod), flushInterval(d.cfg.HealthCheckPeriod), d.envoysOffline)
	})
	wg.Go(func() { d.runScheduler(loopCtx, tickInterval(d.cfg.HealthCheckPeriod)) })
	adminErr := make(chan error, 1)
	if adminLis != nil {
		wg.Go(func() { adminErr <- d.serveAdmin(loopCtx, adminLis) })
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- s.Serve(lis) }()

	var err error
	select {
	case err = <-serveErr:
		if err == nil || errors.Is(err, grpc.ErrServerStopped) {
			err = errors.New("grpc server stopped unexpectedly")
		}
		err = fmt.Errorf("grpc serve: %w", err)
	case err = <-adminErr:
		// The admin listener never stops by itself: treat it as fatal.
		if err == nil {
			err = errors.New("admin listener stopped unexpectedly")
		}
		stopWithGrace(s, d.cfg.StopGrace)
		<-serveErr
	case <-ctx.Done():
		d.log.Info("director stopping")
		close(d.stopping)
		d.disarmAll()
		stopWithGrace(s, d.cfg.StopGrace)
		<-serveErr
	}
	stopLoop()
	wg.Wait()
	if err == nil {
		select {
		case err = <-adminErr:
		default:
		}
	}
	return err
}

// stopWithGrace stops s gracefully, cutting off what is left after grace.
func stopWithGrace(s *grpc.Server, grace time.Duration) {
	done := make(chan struct{})
	go func() { s.GracefulStop(); close(done) }()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		s.Stop()
		<-done
	}
}

// tickInterval is how often the registry flushes liveness and sweeps: half a
// period, so an offline transition is written at most half a period late.
func tickInterval(period time.Duration) time.Duration {
	return min(max(period/2, 10*time.Millisecond), 5*time.Second)
}

// flushInterval is how often the registry writes plain liveness (last_seen)
// to the store: every third period, at most every 30 s, so a flush writes
// each live envoy once instead of once per heartbeat. Status changes,
// online and offline transitions among them, are written at once; a clean
// stop flushes; a crash loses at most this much of last_seen, which only
// the listings show and a restart's grace period covers.
func flushInterval(period time.Duration) time.Duration {
	return max(min(3*period, 30*time.Second), tickInterval(period))
}
