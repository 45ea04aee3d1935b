package main

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// figures are the figure groups fedbench runs, in order; -only picks some.
// list-envoys and idle-cpu share one director with a registered fleet.
// pg-heartbeat, pg-flush and failover need -postgres.
var figures = []string{"heartbeat", "upload", "download", "distribute", "fedavg", "aggregate", "list-envoys", "idle-cpu",
	"pg-heartbeat", "pg-flush", "failover"}

// pgFigures are the figures that need a PostgreSQL server (-postgres).
var pgFigures = []string{"pg-heartbeat", "pg-flush", "failover"}

// config is every knob of a run. The defaults are the sizes BENCHMARKS.md
// reports; -quick swaps in the quickDefaults for the flags not given.
type config struct {
	bin     string
	tmp     string
	quick   bool
	only    []string
	profile string
	strict  bool
	keep    bool
	// serveNoop, when set, turns this process into the idle-cpu floor.
	serveNoop string
	// postgres is a PostgreSQL server URL on which fedbench may create
	// and drop databases; "" skips the PostgreSQL figures.
	postgres string

	hbEnvoys   []int
	hbInflight int
	hbConns    int
	hbWindow   time.Duration
	hbRounds   int

	uploadMiB    int
	downloadMiB  int
	transferReps int

	distEnvoys int
	distMiB    int
	distReps   int

	fedavgParams int64
	fedavgInputs int
	fedavgReps   int

	fleetEnvoys  int
	listReps     int
	idlePeriod   time.Duration
	idleWarmup   time.Duration
	idleWindow   time.Duration
	fleetWorkers int

	pgEnvoys      int
	flushReps     int
	failoverReps  int
	failoverRound int
}

// quickDefaults are the -quick values: a smoke run of every figure in about
// a minute, too small for its ratios to mean much.
var quickDefaults = map[string]string{
	"hb-envoys":      "100,1000",
	"hb-window":      "500ms",
	"hb-rounds":      "2",
	"upload-mib":     "64",
	"download-mib":   "64",
	"transfer-reps":  "1",
	"dist-envoys":    "10",
	"dist-mib":       "32",
	"dist-reps":      "1",
	"fedavg-params":  "10000000",
	"fedavg-reps":    "1",
	"fleet-envoys":   "1000",
	"list-reps":      "3",
	"idle-warmup":    "2s",
	"idle-window":    "5s",
	"fleet-inflight": "32",
	"pg-envoys":      "10000",
	"flush-reps":     "1",
	"failover-reps":  "1",
}

func parseFlags(args []string) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("fedbench", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: fedbench [flags]\n\nRuns fedplane's benchmark figures against their floors and prints one table.\nFigures: %s.\n\nFlags:\n", strings.Join(figures, ", "))
		fs.PrintDefaults()
	}
	var only, hbEnvoys string
	fs.StringVar(&c.bin, "bin", "bin", "folder holding the built director and fladmin binaries (make build)")
	fs.StringVar(&c.tmp, "tmp", os.TempDir(), "scratch folder; a fedbench-* folder is made in it and removed at the end")
	fs.BoolVar(&c.quick, "quick", false, "smoke run: small sizes for every size flag not given explicitly")
	fs.StringVar(&only, "only", "", "comma-separated figures to run (default all): "+strings.Join(figures, ","))
	fs.StringVar(&c.profile, "profile", "", "write CPU profiles of each figure's fedplane side into this folder")
	fs.BoolVar(&c.strict, "strict", false, "exit 1 when a figure misses its goal")
	fs.BoolVar(&c.keep, "keep", false, "keep the scratch folder (and the directors' logs)")
	fs.StringVar(&c.postgres, "postgres", "", "PostgreSQL server URL on which fedbench may create and drop databases, as FEDPLANE_TEST_POSTGRES (make bench passes that variable); empty skips "+strings.Join(pgFigures, ", "))
	fs.StringVar(&c.serveNoop, serveNoopFlag, "", "internal: serve a no-op Director service on this loopback address (the idle-cpu floor) instead of running figures")

	fs.StringVar(&hbEnvoys, "hb-envoys", "1000,10000", "heartbeat: registered envoys, one measurement per count")
	fs.IntVar(&c.hbInflight, "hb-inflight", 64, "heartbeat: calls in flight")
	fs.IntVar(&c.hbConns, "hb-conns", 1, "heartbeat: client connections the calls share")
	fs.DurationVar(&c.hbWindow, "hb-window", 3*time.Second, "heartbeat: length of one measuring window")
	fs.IntVar(&c.hbRounds, "hb-rounds", 3, "heartbeat: alternating floor/director window pairs")

	fs.IntVar(&c.uploadMiB, "upload-mib", 1024, "upload: job folder size in MiB")
	fs.IntVar(&c.downloadMiB, "download-mib", 1024, "download: result model size in MiB")
	fs.IntVar(&c.transferReps, "transfer-reps", 2, "upload, download: alternating floor/fedplane repetitions")

	fs.IntVar(&c.distEnvoys, "dist-envoys", 50, "distribute: envoys fetching the archive at once")
	fs.IntVar(&c.distMiB, "dist-mib", 256, "distribute: job folder size in MiB")
	fs.IntVar(&c.distReps, "dist-reps", 2, "distribute: fetch rounds, each after a raw copy (one more raw copy ends the figure)")

	fs.Int64Var(&c.fedavgParams, "fedavg-params", 100_000_000, "fedavg, aggregate: float32 parameters per model")
	fs.IntVar(&c.fedavgInputs, "fedavg-inputs", 10, "fedavg, aggregate: models averaged")
	fs.IntVar(&c.fedavgReps, "fedavg-reps", 3, "fedavg, aggregate: alternating floor/fedplane repetitions (and numpy's, per aggregator); each side reports its best")

	fs.IntVar(&c.fleetEnvoys, "fleet-envoys", 10_000, "list-envoys, idle-cpu: registered envoys, one connection each")
	fs.IntVar(&c.listReps, "list-reps", 5, "list-envoys: runs of each command; the median counts")
	fs.DurationVar(&c.idlePeriod, "idle-period", 10*time.Second, "idle-cpu: heartbeat period (the director's --health-check-period)")
	fs.DurationVar(&c.idleWarmup, "idle-warmup", 10*time.Second, "idle-cpu: heartbeating before the CPU window opens")
	fs.DurationVar(&c.idleWindow, "idle-window", 40*time.Second, "idle-cpu: CPU measuring window")
	fs.IntVar(&c.fleetWorkers, "fleet-inflight", 64, "list-envoys, idle-cpu: registrations and heartbeats in flight at most")

	fs.IntVar(&c.pgEnvoys, "pg-envoys", 100_000, "pg-flush: registered envoys, all touched by one liveness flush")
	fs.IntVar(&c.flushReps, "flush-reps", 3, "pg-flush: alternating SQLite/PostgreSQL flushes; the median counts")
	fs.IntVar(&c.failoverReps, "failover-reps", 3, "failover: coordinator kills, each on a fresh database; the median counts")
	fs.IntVar(&c.failoverRound, "failover-round", 2, "failover: the coordinator is killed once this many rounds are aggregated")

	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if c.quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for name, v := range quickDefaults {
			if set[name] {
				continue
			}
			if name == "hb-envoys" {
				hbEnvoys = v
				continue
			}
			if err := fs.Set(name, v); err != nil {
				return nil, fmt.Errorf("quick default -%s=%s: %w", name, v, err)
			}
		}
	}
	for _, s := range strings.Split(hbEnvoys, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("-hb-envoys %q: want positive counts separated by commas", hbEnvoys)
		}
		c.hbEnvoys = append(c.hbEnvoys, n)
	}
	if only != "" {
		for _, s := range strings.Split(only, ",") {
			s = strings.TrimSpace(s)
			if !slices.Contains(figures, s) {
				return nil, fmt.Errorf("-only %q: unknown figure %q (figures: %s)", only, s, strings.Join(figures, ","))
			}
			c.only = append(c.only, s)
		}
	}
	positive := map[string]int64{
		"hb-inflight": int64(c.hbInflight), "hb-conns": int64(c.hbConns), "hb-rounds": int64(c.hbRounds),
		"upload-mib": int64(c.uploadMiB), "download-mib": int64(c.downloadMiB), "transfer-reps": int64(c.transferReps),
		"dist-envoys": int64(c.distEnvoys), "dist-mib": int64(c.distMiB), "dist-reps": int64(c.distReps),
		"fedavg-params": c.fedavgParams, "fedavg-inputs": int64(c.fedavgInputs), "fedavg-reps": int64(c.fedavgReps),
		"fleet-envoys": int64(c.fleetEnvoys), "list-reps": int64(c.listReps), "fleet-inflight": int64(c.fleetWorkers),
		"pg-envoys": int64(c.pgEnvoys), "flush-reps": int64(c.flushReps), "failover-reps": int64(c.failoverReps), "failover-round": int64(c.failoverRound),
		"hb-window": int64(c.hbWindow), "idle-period": int64(c.idlePeriod), "idle-window": int64(c.idleWindow),
	}
	for name, v := range positive {
		if v <= 0 {
			return nil, fmt.Errorf("-%s must be positive", name)
		}
	}
	if c.idleWarmup < 0 {
		return nil, fmt.Errorf("-idle-warmup must not be negative")
	}
	return c, nil
}

// runs reports whether figure is selected.
func (c *config) runs(figure string) bool {
	return len(c.only) == 0 || slices.Contains(c.only, figure)
}
