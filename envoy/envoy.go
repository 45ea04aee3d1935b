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
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/aggregatorpb"
	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/api/logspb"
	"github.com/fedplane/fedplane/api/transferspb"
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

// ErrRoot is wrapped by New's error when the training command would run as
// root without Config.AllowRoot.
var ErrRoot = errors.New("training would run as root")

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
	// Directors are the director's gRPC address (host:port, or any gRPC
	// target such as "dns:///host:port"), or the host:port addresses of
	// several replicas of the director, which the envoy tries in order and
	// fails over between (directors.go). Each replica's certificate must
	// carry the host dialled for it, unless a grpc.WithAuthority dial
	// option names the one all of them carry.
	Directors []string
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
	// Roots is the federation's CA, against which job signatures are
	// verified (the --tls-ca file). Without it signatures cannot be checked:
	// signed jobs run as unsigned ones do, and a Policy refuses them all.
	Roots *x509.CertPool
	// Policy, if set, is the site's policy: only signed jobs of allowed
	// submitters, with allowed training commands, run here, and under
	// manual approval only once the site operator approves them.
	Policy *Policy
	// ArchiveLimits cap what a job archive may unpack to; zero fields take
	// job's defaults. The director's advertised limits apply where they
	// are lower.
	ArchiveLimits job.Limits
	// KillGrace is how long a stopped training command has between SIGTERM
	// and SIGKILL. Zero means DefaultKillGrace.
	KillGrace time.Duration
	// RunAs, if set, is the user (a name or a numeric uid) the training
	// command runs as, with that user's groups only. Switching users needs
	// the envoy to run as root. The experiment's job folder, round folders,
	// home and temp dir are handed to that user; the work dir (mode 0711:
	// enter, not list), other experiments' folders and the envoy's files
	// stay the envoy's. New checks that the user can reach the work dir and
	// read the shard.
	RunAs string
	// AllowRoot lets the training command run as root: when the envoy runs
	// as root without RunAs, or RunAs names uid 0. Without it New refuses
	// both with an error wrapping ErrRoot.
	AllowRoot bool
	// Sandbox runs the training command under bubblewrap (bwrap): no
	// network, its own PIDs, the file system read-only, the job folder and
	// the shard read-only, only the round's folder and the run's home and
	// temp dir writable, the rest of the work dir and Secrets hidden. New
	// fails when bwrap is missing or cannot make a sandbox here.
	Sandbox bool
	// WithholdStderr keeps what the training command wrote (its stderr
	// tail, a bad metrics line) out of failure reports: the director hears
	// what failed and the exit status only. The site's log keeps all.
	WithholdStderr bool
	// Secrets are files the training command must not see or learn the
	// place of: the envoy's TLS key and certificates. The sandbox hides
	// them, and failure reports name them "<secret>".
	Secrets []string
	// DialOptions are added to the envoy's own (insecure transport
	// credentials and OpenFL's message size limits); a transport credentials
	// option here replaces the insecure default.
	DialOptions []grpc.DialOption
	// ShareLogs sends the training command's output (stdout and stderr,
	// its last MaxSharedLog bytes, the site's paths redacted as in failure
	// reports) to the director after each run and when asked, so that the
	// job's submitter can read it (fladmin logs). A Policy's share_logs
	// decides instead when there is a Policy.
	ShareLogs bool
	// Prometheus, when set, records what the envoy shows Prometheus.
	Prometheus *Prometheus
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
	logc logspb.TrainingLogsClient
	xfrc transferspb.TransfersClient

	// prom is Config.Prometheus (nil: off); registered says whether the
	// director took the registration and answered the last health check.
	prom       *Prometheus
	registered atomic.Bool

	// runAs is Config.RunAs resolved, nil to run training as the envoy.
	runAs *account
	// sandbox is bubblewrap's flags for every run, nil without Sandbox.
	sandbox []string

	mu       sync.Mutex
	cur      *experiment // the experiment taken, nil while idle
	awaiting string      // the experiment held for the operator's approval

	// logs are the experiments whose training logs are to be sent
	// (sharelogs.go).
	logs logShipper

	// poke makes the heartbeat go at once (a job started waiting for
	// approval, or stopped).
	poke chan struct{}
}

// New checks cfg, makes ShardDir and WorkDir absolute, and creates WorkDir.
// It refuses to run training as root unless cfg.AllowRoot (ErrRoot), checks
// that cfg.RunAs can reach the work dir and read the shard, and tries
// bubblewrap once when cfg.Sandbox is set. It does not contact the director.
func New(cfg Config) (*Envoy, error) {
	if err := checkName(cfg.Name); err != nil {
		return nil, err
	}
	if err := checkDirectors(cfg.Directors); err != nil {
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
	cfg.Directors = slices.Clone(cfg.Directors)
	cfg.SampleShape = slices.Clone(cfg.SampleShape)
	cfg.TargetShape = slices.Clone(cfg.TargetShape)
	cfg.DialOptions = slices.Clone(cfg.DialOptions)
	cfg.Secrets = slices.Clone(cfg.Secrets)
	for i, s := range cfg.Secrets {
		if cfg.Secrets[i], err = filepath.Abs(s); err != nil {
			return nil, fmt.Errorf("secret file: %w", err)
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Policy != nil && cfg.Roots == nil {
		return nil, errors.New("a site policy needs the federation's CA (--tls-ca) to verify who signed each job")
	}
	e := &Envoy{cfg: cfg, log: log.With(api.LogEnvoy, cfg.Name), poke: make(chan struct{}, 1), prom: cfg.Prometheus}
	e.logs.wake = make(chan struct{}, 1)
	if err := e.isolate(); err != nil {
		return nil, err
	}
	return e, nil
}

// isolate checks and prepares what the training command runs with: the
// user it runs as and the sandbox, and refuses root unless allowed.
func (e *Envoy) isolate() error {
	cfg := &e.cfg
	euid := os.Geteuid()
	if cfg.RunAs == "" {
		if euid == 0 && !cfg.AllowRoot {
			return fmt.Errorf("%w: the envoy runs as root and would run the job's code as root too", ErrRoot)
		}
	} else {
		a, err := lookupAccount(cfg.RunAs)
		if err != nil {
			return err
		}
		switch {
		case a.uid == 0 && !cfg.AllowRoot:
			return fmt.Errorf("%w: run as %s", ErrRoot, a)
		case euid != 0:
			return fmt.Errorf("run as %s: switching users needs the envoy to run as root; it runs as uid %d", a, euid)
		}
		// Enter, not list: the training reaches its own experiment's
		// folder by name; every experiment's folder is 0700 or 0711.
		if err := os.Chmod(cfg.WorkDir, 0o711); err != nil {
			return fmt.Errorf("work dir: %w", err)
		}
		if err := a.check("work dir", cfg.WorkDir, permExec); err != nil {
			return err
		}
		if err := a.check("shard dir", cfg.ShardDir, permRead|permExec); err != nil {
			return err
		}
		e.runAs = a
	}
	if cfg.Sandbox {
		asRoot := euid == 0 && (e.runAs == nil || e.runAs.uid == 0)
		flags := sandboxFlags(asRoot)
		if err := probeSandbox(context.Background(), flags, e.credential()); err != nil {
			return err
		}
		e.sandbox = flags
	}
	return nil
}

// credential is what the training command runs with: nil for the envoy's
// own user.
func (e *Envoy) credential() *syscall.Credential {
	if e.runAs == nil {
		return nil
	}
	return e.runAs.credential()
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
	conn, err := e.dial()
	if err != nil {
		return err
	}
	defer conn.Close()
	e.dirc = directorpb.NewDirectorClient(conn)
	e.aggc = aggregatorpb.NewAggregatorClient(conn)
	e.logc = logspb.NewTrainingLogsClient(conn)
	e.xfrc = transferspb.NewTransfersClient(conn)

	e.cleanStale()
	e.log.Info("envoy starting", api.LogDirector, strings.Join(e.cfg.Directors, ","), api.LogShard, e.cfg.ShardDir, api.LogWorkDir, e.cfg.WorkDir)
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
	if e.sharesLogs() {
		wg.Go(func() { e.shipLogs(ctx) })
	}
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
