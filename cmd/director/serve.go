package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"time"

	"github.com/spf13/cobra"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/cmd/internal/cli"
	"github.com/fedplane/fedplane/director"
	"github.com/fedplane/fedplane/director/admin"
	"github.com/fedplane/fedplane/director/server"
	"github.com/fedplane/fedplane/store/blob"
)

// serveOptions are the flags of `director serve`.
type serveOptions struct {
	config            string
	dataDir           string
	database          string
	grpcListen        string
	adminListen       string
	sampleShape       []string
	targetShape       []string
	healthCheckPeriod time.Duration
	offlineAfter      time.Duration
	maxJobSize        cli.ByteSize
	maxUnpackedSize   cli.ByteSize
	maxResults        cli.ByteSize
	adminMaxConns     int
	adminMaxPerAddr   int
	adminHandshake    time.Duration
	adminIdleTimeout  time.Duration
	adminMinRate      cli.ByteSize
	pprofListen       string
	metricsListen     string
	webListen         string
	webURL            string
	eventHistory      int
	leaseTTLFlag      time.Duration
	advertiseGRPC     string
	advertiseAdmin    string
	blobStore         string
	blobEndpoint      string
	blobRegion        string
	blobCacheSize     cli.ByteSize
	tls               cli.TLSFlags
	insecure          bool
	logFormat         string
	logLevel          string
}

func newServeCmd() *cobra.Command {
	o := &serveOptions{
		maxJobSize:      director.DefaultMaxJobSize,
		maxUnpackedSize: director.DefaultMaxUnpackedSize,
		maxResults:      director.DefaultMaxResultsInFlight,
		blobCacheSize:   blob.DefaultCacheSize,
	}
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the director until SIGINT or SIGTERM",
		Long: `Run the director: the OpenFL Director and Aggregator gRPC services on
--grpc-listen and the admin port on --admin-listen, with state in
--data-dir (SQLite plus files), or in the PostgreSQL database --database
names and files in --data-dir.

Directors on one PostgreSQL database are replicas of one director (see
docs/scale.md): the one holding the coordinator lease serves, and the
others stand by, relaying their gRPC and admin ports to it byte for byte
(TLS ends at the coordinator). When the coordinator dies, a standby takes
the lease once it lapses (--lease-ttl) and resumes every running
experiment from the database and the blob store, as a restart would.
Give replicas the same --blob-store, and each its own --data-dir.

Stored files (job archives, round models, task results, training logs)
may go to an S3-compatible bucket instead of --data-dir, with
--blob-store s3://bucket/prefix.

Every flag can also be set in a YAML file given with --config, under the
flag's name (for example "grpc-listen: 127.0.0.1:50051" or
"sample-shape: [28, 28]"); flags on the command line win over the file.

The director stops gracefully on SIGTERM or SIGINT (^C). Exit status: 0
after SIGTERM, 130 after SIGINT, 1 if it cannot start or fails while
serving, 2 on a usage error (including a flag value it refuses, in flags
or in --config).`,
		Example: `  director serve
  director serve --sample-shape 28,28 --target-shape 1 --health-check-period 5s
  director serve --config director.yaml
  director serve --database 'postgres://fedplane@db.example.org/fedplane?sslmode=verify-full'
  AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... director serve --blob-store s3://models/fedplane --blob-region eu-west-1`,
		Args: cobra.NoArgs,
		RunE: cli.RunWithConfig(&o.config, o.run),
	}
	f := cmd.Flags()
	cli.AddConfigFlag(cmd, &o.config)
	f.StringVar(&o.dataDir, "data-dir", director.DefaultDataDir, "directory for the database and stored files (created if missing)")
	f.StringVar(&o.database, "database", "", "the database: postgres://USER@HOST:PORT/DB?sslmode=... (PostgreSQL), or sqlite:PATH (default: sqlite:DATA-DIR/fedplane.db)")
	f.StringVar(&o.grpcListen, "grpc-listen", server.DefaultGRPCListen, "address of the OpenFL gRPC services")
	f.StringVar(&o.adminListen, "admin-listen", server.DefaultAdminListen, "address of the admin port for fladmin")
	f.StringSliceVar(&o.sampleShape, "sample-shape", nil, "the federation's sample shape, comma-separated (e.g. 28,28); empty accepts any")
	f.StringSliceVar(&o.targetShape, "target-shape", nil, "the federation's target shape, comma-separated (e.g. 1); empty accepts any")
	f.DurationVar(&o.healthCheckPeriod, "health-check-period", director.DefaultHealthCheckPeriod, "heartbeat period handed to envoys")
	f.DurationVar(&o.offlineAfter, "offline-after", 0, "an envoy is offline this long after its last heartbeat (default 2 health check periods)")
	f.Var(&o.maxJobSize, "max-job-size", "largest job archive an upload may send (e.g. 10GiB)")
	f.Var(&o.maxUnpackedSize, "max-unpacked-size", "largest unpacked total of a job archive")
	f.Var(&o.maxResults, "max-results-in-flight", "temp space for task results being received, all envoys together; an upload past it is told to retry")
	f.IntVar(&o.adminMaxConns, "admin-max-conns", admin.DefaultMaxConns, "concurrent admin connections past their TLS handshake; more are told to retry")
	f.IntVar(&o.adminMaxPerAddr, "admin-max-conns-per-addr", admin.DefaultMaxConnsPerAddr, "concurrent admin connections of one client address, handshaking or served")
	f.DurationVar(&o.adminHandshake, "admin-handshake-timeout", admin.DefaultHandshakeTimeout, "cut off an admin connection whose TLS handshake takes longer")
	f.DurationVar(&o.adminIdleTimeout, "admin-idle-timeout", admin.DefaultIdleTimeout, "cut off an admin connection on which nothing moved this long")
	o.adminMinRate = admin.DefaultMinRate
	f.Var(&o.adminMinRate, "admin-min-rate", "drop an admin client whose request arrives slower than this per second, measured over 10 s of waiting for it (0 turns the check off)")
	f.StringVar(&o.pprofListen, "pprof-listen", "", "serve net/http/pprof profiles (/debug/pprof/) on this loopback address, e.g. 127.0.0.1:6060; empty is off")
	f.StringVar(&o.metricsListen, "metrics-listen", "", "serve Prometheus metrics (/metrics) and /healthz, /readyz over plain HTTP on this address, e.g. 127.0.0.1:9464; empty is off; beyond loopback only with TLS flags or --insecure")
	f.StringVar(&o.webListen, "web-listen", "", "serve the read-only web console on this address, e.g. 127.0.0.1:8080; HTTPS with the TLS flags, else loopback only; empty is off (log in with fladmin console)")
	f.StringVar(&o.webURL, "web-url", "", "the web console's address as browsers reach it, which fladmin console's login links start with (default: made from --web-listen; needed when that is a wildcard address)")
	f.IntVar(&o.eventHistory, "event-history", api.DefaultEventHistory, "how many events (fladmin events) the director keeps; older ones are pruned (the audit trail is never pruned)")
	f.DurationVar(&o.leaseTTLFlag, "lease-ttl", 0, "replicas on PostgreSQL: how long the coordinator lease lasts unrenewed, so how soon a standby takes over from a dead coordinator (default: the health check period, at least 1s)")
	f.StringVar(&o.advertiseGRPC, "advertise-grpc", "", "replicas on PostgreSQL: the address other replicas reach this one's gRPC port at (default: the bound address, this host's name for a wildcard)")
	f.StringVar(&o.advertiseAdmin, "advertise-admin", "", "replicas on PostgreSQL: the address other replicas reach this one's admin port at (default: as --advertise-grpc)")
	f.StringVar(&o.blobStore, "blob-store", "", "where job archives, round models and task results are kept: file:///PATH, or s3://BUCKET/PREFIX, which several directors can share (default: files under --data-dir)")
	f.StringVar(&o.blobEndpoint, "blob-endpoint", "", "the S3 endpoint, https://host[:port] (http:// on loopback, or with --insecure) (default: $AWS_ENDPOINT_URL_S3, $AWS_ENDPOINT_URL, or Amazon S3); credentials come from $AWS_ACCESS_KEY_ID, $AWS_SECRET_ACCESS_KEY and $AWS_SESSION_TOKEN, or ~/.aws/credentials")
	f.StringVar(&o.blobRegion, "blob-region", "", "the S3 bucket's region (default: $AWS_REGION, or what the endpoint says)")
	f.Var(&o.blobCacheSize, "blob-cache-size", "disk space under --data-dir for local copies of S3 blobs, which reads at random offsets need; the least recently used go first")
	o.tls.Add(cmd, "the director's")
	f.BoolVar(&o.insecure, "insecure", false, "serve without TLS on addresses other than loopback (anyone who reaches the ports is trusted)")
	cli.AddLogFlags(cmd, &o.logFormat, &o.logLevel)
	return cmd
}

func (o *serveOptions) run(cmd *cobra.Command) error {
	log, err := cli.NewLogger(cmd.ErrOrStderr(), o.logFormat, o.logLevel)
	if err != nil {
		return err
	}
	if err := o.check(); err != nil {
		return err
	}
	tlsCfg, err := o.tls.Server()
	if err != nil {
		return err
	}
	// The profile server stops with the director; if it cannot serve, it
	// stops the director with its error.
	ctx, stop := context.WithCancel(cmd.Context())
	defer stop()
	srv := server.Config{
		GRPCListen:    o.grpcListen,
		AdminListen:   o.adminListen,
		MetricsListen: o.metricsListen,
		WebListen:     o.webListen,
		WebURL:        o.webURL,
		TLS:           tlsCfg,
		Insecure:      o.insecure,
		Admin: admin.Config{MaxConns: o.adminMaxConns, MaxConnsPerAddr: o.adminMaxPerAddr,
			HandshakeTimeout: o.adminHandshake, IdleTimeout: o.adminIdleTimeout, MinRate: minRate(int64(o.adminMinRate))},
	}
	if err := srv.Check(); err != nil {
		return &cli.UsageError{Err: err} // an address in flags (or --config)
	}
	unlock, err := lockDataDir(o.dataDir)
	if err != nil {
		return err
	}
	defer unlock()
	blobs, err := blob.Open(ctx, o.blobStore, blob.Options{DataDir: o.dataDir, Endpoint: o.blobEndpoint,
		Region: o.blobRegion, CacheSize: int64(o.blobCacheSize), Insecure: o.insecure})
	if errors.Is(err, blob.ErrConfig) {
		return &cli.UsageError{Err: err}
	}
	if err != nil {
		return fmt.Errorf("open blob store: %w", err)
	}
	dcfg := director.Config{
		DataDir:            o.dataDir,
		Database:           o.database,
		Blobs:              blobs,
		SampleShape:        cli.TrimAll(o.sampleShape),
		TargetShape:        cli.TrimAll(o.targetShape),
		HealthCheckPeriod:  o.healthCheckPeriod,
		OfflineAfter:       o.offlineAfter,
		MaxJobSize:         int64(o.maxJobSize),
		MaxUnpackedSize:    int64(o.maxUnpackedSize),
		MaxResultsInFlight: int64(o.maxResults),
		EventHistory:       o.eventHistory,
		Version:            cli.Version,
		Logger:             log,
	}
	var pprofWG sync.WaitGroup
	var pprofErr error
	if o.pprofListen != "" {
		pprofWG.Go(func() {
			if pprofErr = listenAndServePprof(ctx, o.pprofListen, log); pprofErr != nil {
				stop()
			}
		})
	}
	var runErr error
	if isPostgres(o.database) {
		runErr = o.serveReplica(ctx, stop, log, srv, dcfg)
	} else {
		runErr = serveDirector(ctx, dcfg, func(d *director.Director) error { return server.Run(ctx, d, srv) })
	}
	stop()
	pprofWG.Wait()
	if runErr == nil {
		runErr = pprofErr
	}
	if runErr == nil {
		log.Info("director stopped")
	}
	return runErr
}

// serveDirector opens the director that cfg describes, serves it with
// serve, and closes it.
func serveDirector(ctx context.Context, cfg director.Config, serve func(*director.Director) error) error {
	d, err := director.New(ctx, cfg)
	if errors.Is(err, api.ErrInvalid) {
		// director.New refuses a configuration with api.ErrInvalid before
		// it opens anything: a value given in flags (or --config).
		return &cli.UsageError{Err: fmt.Errorf("start director: %w", err)}
	}
	if err != nil {
		return fmt.Errorf("start director: %w", err)
	}
	runErr := serve(d)
	if err := d.Close(); err != nil && runErr == nil {
		runErr = fmt.Errorf("close director: %w", err)
	}
	return runErr
}

// check refuses flag values the director cannot serve with, as usage
// errors.
func (o *serveOptions) check() error {
	if o.dataDir == "" {
		return cli.Usagef("--data-dir must not be empty")
	}
	if err := checkDatabase("database", o.database, true); err != nil {
		return err
	}
	if err := cli.CheckHostPort("grpc-listen", o.grpcListen); err != nil {
		return err
	}
	if err := cli.CheckHostPort("admin-listen", o.adminListen); err != nil {
		return err
	}
	if _, port, _ := net.SplitHostPort(o.grpcListen); o.grpcListen == o.adminListen && port != "0" {
		return cli.Usagef("--grpc-listen and --admin-listen are both %s: the ports need an address each", o.grpcListen)
	}
	if err := cli.CheckShape("sample-shape", o.sampleShape); err != nil {
		return err
	}
	if err := cli.CheckShape("target-shape", o.targetShape); err != nil {
		return err
	}
	if o.healthCheckPeriod <= 0 {
		return cli.Usagef("--health-check-period %v: must be positive", o.healthCheckPeriod)
	}
	if o.offlineAfter < 0 {
		return cli.Usagef("--offline-after %v: must not be negative", o.offlineAfter)
	}
	if o.maxJobSize <= 0 || o.maxUnpackedSize <= 0 || o.maxResults <= 0 {
		return cli.Usagef("--max-job-size, --max-unpacked-size and --max-results-in-flight must be positive")
	}
	if o.adminMaxConns <= 0 || o.adminMaxPerAddr <= 0 || o.adminHandshake <= 0 || o.adminIdleTimeout <= 0 {
		return cli.Usagef("--admin-max-conns, --admin-max-conns-per-addr, --admin-handshake-timeout and --admin-idle-timeout must be positive")
	}
	if o.leaseTTLFlag != 0 && o.leaseTTLFlag < 100*time.Millisecond {
		return cli.Usagef("--lease-ttl %v: must be at least 100ms", o.leaseTTLFlag)
	}
	for name, a := range map[string]string{"advertise-grpc": o.advertiseGRPC, "advertise-admin": o.advertiseAdmin} {
		if a != "" {
			if err := cli.CheckHostPort(name, a); err != nil {
				return err
			}
		}
	}
	if o.eventHistory < 100 {
		return cli.Usagef("--event-history %d: keep at least 100 events", o.eventHistory)
	}
	if o.metricsListen != "" {
		if err := cli.CheckHostPort("metrics-listen", o.metricsListen); err != nil {
			return err
		}
	}
	if o.webListen != "" {
		if err := cli.CheckHostPort("web-listen", o.webListen); err != nil {
			return err
		}
	}
	if o.webURL != "" {
		if u, err := url.Parse(o.webURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
			return cli.Usagef("--web-url %q: want http(s)://HOST[:PORT], as browsers reach the console", o.webURL)
		}
	}
	if o.pprofListen != "" {
		if err := checkPprofListen(o.pprofListen); err != nil {
			return cli.Usagef("%v", err)
		}
	}
	return nil
}

// minRate is --admin-min-rate as admin.Config takes it: 0 turns the check
// off, which the config says with a negative rate.
func minRate(n int64) int64 {
	if n == 0 {
		return -1
	}
	return n
}
