package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/scrape"
	"github.com/fedplane/fedplane/cmd/internal/cli"
	"github.com/fedplane/fedplane/envoy"
	"github.com/fedplane/fedplane/job"
)

// startOptions are the flags of `envoy start`.
type startOptions struct {
	config      string
	name        string
	director    []string
	shardDir    string
	samples     uint64
	sampleShape []string
	targetShape []string
	description string
	workDir     string
	killGrace   time.Duration
	policy      string
	runAs       string
	allowRoot   bool
	sandbox     bool
	shareStderr bool
	shareLogs   bool
	metrics     string
	tls         cli.TLSFlags
	maxUnpacked cli.ByteSize
	maxEntries  int
	logFormat   string
	logLevel    string
}

func newStartCmd() *cobra.Command {
	o := &startOptions{}
	cmd := &cobra.Command{
		Use:   "start",
		Short: "Run the envoy until SIGINT or SIGTERM",
		Long: `Run the envoy: register the shard with the director at --director, keep it
alive with health checks, and run the experiments the director hands it, one
at a time, in --work-dir.

--director may list several replicas of the director, comma-separated (or
as a list in --config), for a site that reaches them without a load
balancer: the envoy connects to the first that answers, in the order given,
and when that connection fails it starts over from the first, and carries
on where it was (long polls asked again, downloads and uploads resumed,
registering again with a replica that does not know it). With TLS each
replica's certificate must carry the host it is dialled as, unless
--tls-server-name names the one they all carry.

For every round the envoy downloads the global model and runs the job's
training command in the unpacked job folder, in its own process group, with
FEDPLANE_INPUT_MODEL, FEDPLANE_OUTPUT_MODEL, FEDPLANE_METRICS, FEDPLANE_DATA
(--shard-dir), FEDPLANE_ROUND, FEDPLANE_ENVOY, FEDPLANE_EXPERIMENT and
FEDPLANE_SAMPLES in its environment. The shard's path goes to the training
command only; nothing of the shard is sent to the director. The commands'
output (stdout and stderr) is kept in <work-dir>/<experiment>/logs/train.log,
about its last 16 MiB. --share-logs (or share_logs: true in the site
policy) also sends its last 4 MiB, the site's paths redacted, to the
director after each run, where the job's submitter reads it with
"fladmin logs JOB --envoy NAME"; by default it stays here.

--metrics-listen serves Prometheus metrics (/metrics; names start with
fedplane_envoy_) and /healthz, /readyz (200 once registered) over plain
HTTP without authentication; they show how the site trains, never paths,
names or data. Keep the address on loopback or a network only the scraper
reaches.

The training command's environment is those variables plus HOME and TMPDIR
(in the experiment's folder), PATH and LANG; nothing else of the envoy's.
It runs as the envoy's user unless --run-as names another (the envoy must
then run as root); the envoy refuses to run it as root unless given
--allow-root. --sandbox adds bubblewrap (bwrap): no network, the file
system read-only, the shard read-only, the work dir and the TLS files
hidden. See SECURITY.md for what each level stops.

A failed round is reported to the director with the exit status and the
tail of the command's stderr, the site's paths replaced by placeholders
such as <shard>; --share-stderr=false sends the status alone. An output
model holding NaN or Inf, or a sample count below 1, fails the round.

Every flag can also be set in a YAML file given with --config, under the
flag's name (for example "name: site-1" or "sample-shape: [28, 28]"); flags
on the command line win over the file.

With --policy the site decides what runs on it: only jobs signed by their
submitter (fladmin signs over TLS), verified against --tls-ca, whose signer
and training command the policy allows, run here; under "approval: manual"
each waits until the site operator runs "envoy approve JOB" or "envoy reject
JOB --reason ..." ("envoy pending" lists them). Refusals are reported to the
director with the site's reason. See examples/site-policy.yaml.

The envoy stops on SIGTERM or SIGINT (^C), after stopping a running
training command. Exit status: 0 after SIGTERM, 130 after SIGINT, 1 if the
director refuses the shard or the envoy cannot start, 2 on a usage error
(including a flag value it refuses, such as a --name with a space).`,
		Example: `  envoy start --name site-1 --shard-dir /data/mnist --samples 6000 \
      --sample-shape 28,28 --target-shape 1 --run-as fedplane-train --sandbox
  envoy start --name site-2 --director director.example.org:50051 --shard-dir ./shard
  envoy start --name site-3 --director dir-a.example.org:50051,dir-b.example.org:50051 --shard-dir ./shard
  envoy start --config envoy.yaml`,
		Args: cobra.NoArgs,
		RunE: cli.RunWithConfig(&o.config, o.run),
	}
	f := cmd.Flags()
	cli.AddConfigFlag(cmd, &o.config)
	f.StringVar(&o.name, "name", "", "the envoy's name in the federation (required): letters, digits, '.', '_', '-', '@'")
	f.StringSliceVar(&o.director, "director", []string{envoy.DefaultDirector}, "the director's gRPC port (its --grpc-listen, not the admin port), HOST:PORT; or several replicas' ports, comma-separated, tried in order")
	f.StringVar(&o.shardDir, "shard-dir", "", "the local data shard, handed to the training command as FEDPLANE_DATA (required)")
	f.Uint64Var(&o.samples, "samples", 0, "number of samples in the shard: the FedAvg weight unless the training command reports n_samples")
	f.StringSliceVar(&o.sampleShape, "sample-shape", nil, "shape of one sample, comma-separated (e.g. 28,28)")
	f.StringSliceVar(&o.targetShape, "target-shape", nil, "shape of one target, comma-separated (e.g. 1)")
	f.StringVar(&o.description, "description", "", "description of the shard for the federation's users")
	f.StringVar(&o.workDir, "work-dir", envoy.DefaultWorkDir, "directory for experiments and their logs (created if missing)")
	f.DurationVar(&o.killGrace, "kill-grace", envoy.DefaultKillGrace, "time a stopped training command has between SIGTERM and SIGKILL")
	f.StringVar(&o.policy, "policy", "", "the site policy (YAML): who may run jobs here, which training commands, manual approval; needs --tls-ca (see examples/site-policy.yaml)")
	f.StringVar(&o.runAs, "run-as", "", "run the training command as this user (name or uid), which then cannot read the envoy's key or other experiments; needs the envoy to run as root; give it a user of its own: every process of that user is killed when a run ends")
	f.BoolVar(&o.allowRoot, "allow-root", false, "let the training command run as root (the envoy runs as root without --run-as, or --run-as names root)")
	f.BoolVar(&o.sandbox, "sandbox", false, "run the training command under bubblewrap (bwrap): no network, read-only file system and shard, work dir and TLS files hidden")
	f.BoolVar(&o.shareStderr, "share-stderr", true, "send the tail of a failed training command's stderr (site paths redacted) to the director; false sends the exit status alone")
	f.BoolVar(&o.shareLogs, "share-logs", false, "send the training command's output (stdout and stderr, its last 4 MiB, site paths redacted) to the director, for the job's submitter (fladmin logs); with --policy, the policy's share_logs decides instead")
	f.StringVar(&o.metrics, "metrics-listen", "", "serve Prometheus metrics (/metrics) and /healthz, /readyz over plain HTTP without authentication on this address, e.g. 127.0.0.1:9465; empty is off")
	o.tls.Add(cmd, "the envoy's")
	o.tls.AddServerName(f, "--director")
	o.maxUnpacked = job.DefaultMaxUnpacked
	f.Var(&o.maxUnpacked, "max-unpacked-size", "largest unpacked total of a job archive this site accepts; the director's own limit applies when lower")
	f.IntVar(&o.maxEntries, "max-archive-entries", job.DefaultMaxFiles, "most files and folders in a job archive this site accepts; the director's own limit applies when lower")
	cli.AddLogFlags(cmd, &o.logFormat, &o.logLevel)
	return cmd
}

// check refuses flag values the envoy cannot run with, as usage errors.
func (o *startOptions) check() error {
	switch {
	case o.name == "":
		return cli.Usagef("--name is required")
	case o.shardDir == "":
		return cli.Usagef("--shard-dir is required")
	case o.killGrace <= 0:
		return cli.Usagef("--kill-grace %v: must be positive", o.killGrace)
	case o.maxUnpacked <= 0:
		return cli.Usagef("--max-unpacked-size must be positive")
	case o.maxEntries <= 0:
		return cli.Usagef("--max-archive-entries %d: must be positive", o.maxEntries)
	case !utf8.ValidString(o.description):
		return cli.Usagef("--description is not UTF-8 text")
	case o.shareLogs && o.policy != "":
		return cli.Usagef("--share-logs with --policy: the site policy decides; set share_logs: true in it")
	}
	if o.metrics != "" {
		if err := cli.CheckHostPort("metrics-listen", o.metrics); err != nil {
			return err
		}
	}
	if err := cli.CheckName("name", o.name); err != nil {
		return err
	}
	// One gRPC target with a scheme ("dns:///host:port", "unix:path") is
	// grpc-go's to check; several directors are host:port each.
	if d := cli.TrimAll(o.director); len(d) != 1 || !strings.Contains(d[0], "://") && !strings.HasPrefix(d[0], "unix:") {
		dirs, err := cli.CheckAddrs("director", o.director)
		if err != nil {
			return err
		}
		o.director = dirs
	} else {
		o.director = d
	}
	if err := cli.CheckShape("sample-shape", o.sampleShape); err != nil {
		return err
	}
	return cli.CheckShape("target-shape", o.targetShape)
}

func (o *startOptions) run(cmd *cobra.Command) error {
	log, err := cli.NewLogger(cmd.ErrOrStderr(), o.logFormat, o.logLevel)
	if err != nil {
		return err
	}
	if err := o.check(); err != nil {
		return err
	}
	if o.samples == 0 {
		log.Warn("--samples is 0: every round fails unless the training command reports n_samples")
	}
	tlsCfg, err := o.tls.Client()
	if err != nil {
		return err
	}
	var (
		dial  []grpc.DialOption
		roots *x509.CertPool
	)
	if tlsCfg != nil {
		dial = append(dial, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
		roots = tlsCfg.RootCAs
	}
	if o.tls.ServerName != "" {
		// The name every director's certificate is checked against, where
		// several directors would each be checked against its own host.
		dial = append(dial, grpc.WithAuthority(o.tls.ServerName))
	}
	var policy *envoy.Policy
	if o.policy != "" {
		if tlsCfg == nil {
			return cli.Usagef("--policy needs --tls-ca, --tls-cert and --tls-key: the envoy verifies who signed each job against the federation's CA")
		}
		if policy, err = envoy.LoadPolicy(o.policy); err != nil {
			return err
		}
		log.Info("site policy loaded", api.LogPath, o.policy, api.LogApproval, policy.Approval)
	}
	var prom *envoy.Prometheus
	if o.metrics != "" {
		prom = envoy.NewPrometheus(cli.Version)
	}
	e, err := envoy.New(envoy.Config{
		DialOptions:   dial,
		Name:          o.name,
		Directors:     o.director,
		ShardDir:      o.shardDir,
		Description:   o.description,
		WorkDir:       o.workDir,
		Samples:       o.samples,
		SampleShape:   cli.TrimAll(o.sampleShape),
		TargetShape:   cli.TrimAll(o.targetShape),
		KillGrace:     o.killGrace,
		ArchiveLimits: job.Limits{MaxUnpacked: int64(o.maxUnpacked), MaxFiles: o.maxEntries},
		Roots:         roots,
		Policy:        policy,
		RunAs:         o.runAs,
		AllowRoot:     o.allowRoot,
		Sandbox:       o.sandbox,
		// What the training command must not see nor learn the place of.
		Secrets:        nonEmpty(o.tls.Key, o.tls.Cert, o.tls.CA),
		WithholdStderr: !o.shareStderr,
		ShareLogs:      o.shareLogs,
		Prometheus:     prom,
		Logger:         log,
	})
	if errors.Is(err, envoy.ErrRoot) {
		return fmt.Errorf("start envoy: %w; give --run-as USER to run it as another user, or --allow-root to run it as root", err)
	}
	if err != nil {
		return fmt.Errorf("start envoy: %w", err)
	}
	err = o.runWithMetrics(cmd.Context(), e, prom, log)
	if errors.Is(err, envoy.ErrRefused) {
		return err // "director refused the shard: <reason>"
	}
	if err != nil {
		return fmt.Errorf("envoy: %w", err)
	}
	return nil
}

// runWithMetrics runs e and, with --metrics-listen, serves prom beside it
// until e stops; a metrics server that cannot serve stops the envoy with
// its error.
func (o *startOptions) runWithMetrics(ctx context.Context, e *envoy.Envoy, prom *envoy.Prometheus, log *slog.Logger) error {
	if prom == nil {
		return e.Run(ctx)
	}
	lis, err := net.Listen("tcp", o.metrics)
	if err != nil {
		return fmt.Errorf("metrics listen: %w", err)
	}
	if host, _, _ := net.SplitHostPort(o.metrics); !isLoopback(host) {
		log.Warn("metrics served beyond loopback without authentication: anyone who reaches the port sees how this site trains (no paths, names or data); keep it on a network only the scraper reaches",
			api.LogAddr, o.metrics)
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	var (
		wg       sync.WaitGroup
		serveErr error
	)
	wg.Go(func() {
		if serveErr = scrape.Serve(ctx, "metrics", lis, scrape.Handler(prom.Registry(), e.Ready), log); serveErr != nil {
			stop()
		}
	})
	err = e.Run(ctx)
	stop()
	wg.Wait()
	if err == nil {
		err = serveErr
	}
	return err
}

// isLoopback reports whether host is "localhost" or a loopback address.
func isLoopback(host string) bool {
	ip, err := netip.ParseAddr(host)
	return host == "localhost" || err == nil && ip.IsLoopback()
}

// nonEmpty returns the non-empty strings of ss.
func nonEmpty(ss ...string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}
