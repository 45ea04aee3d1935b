package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// bench is one run: its configuration, its scratch folder and its rows.
type bench struct {
	cfg     *config
	scratch string
	log     io.Writer // progress lines, on stderr
}

func newBench(cfg *config) (*bench, error) {
	for _, name := range []string{"director", "fladmin"} {
		if _, err := os.Stat(filepath.Join(cfg.bin, name)); err != nil {
			return nil, fmt.Errorf("%s: run make build first, or point -bin at the binaries", err)
		}
	}
	if cfg.profile != "" {
		if err := os.MkdirAll(cfg.profile, 0o755); err != nil {
			return nil, err
		}
	}
	scratch, err := os.MkdirTemp(cfg.tmp, "fedbench-")
	if err != nil {
		return nil, err
	}
	return &bench{cfg: cfg, scratch: scratch, log: os.Stderr}, nil
}

func (b *bench) close() {
	if b.cfg.keep {
		fmt.Fprintln(b.log, "kept", b.scratch)
		return
	}
	os.RemoveAll(b.scratch)
}

// clearScratch removes what the last figure left in the scratch folder (its
// processes have stopped), so that figures do not add up on disk; -keep
// keeps everything.
func (b *bench) clearScratch() {
	if b.cfg.keep {
		return
	}
	entries, _ := os.ReadDir(b.scratch)
	for _, e := range entries {
		os.RemoveAll(filepath.Join(b.scratch, e.Name()))
	}
}

// logf prints a progress line on stderr, so stdout holds only the table.
func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "%s fedbench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// dir makes a fresh folder for one figure inside the scratch folder.
func (b *bench) dir(name string) (string, error) {
	return os.MkdirTemp(b.scratch, name+"-")
}

// figure is a group of rows measured together; on error its rows are
// replaced by one error row named after it.
type figure struct {
	name  string // as -only names it
	title string // for an error row
	run   func(context.Context) ([]row, error)
}

// run measures the selected figures, prints the machine and the table to
// out, and returns the exit code.
func (b *bench) run(ctx context.Context, out io.Writer) int {
	all := []figure{
		{"heartbeat", "1. heartbeats/s", b.heartbeat},
		{"upload", "2. upload", b.upload},
		{"download", "3. download", b.download},
		{"distribute", "4. distribution", b.distribute},
		{"fedavg", "5. FedAvg", b.fedavg},
		{"aggregate", "8. aggregators", b.aggregate},
	}
	if b.cfg.runs("list-envoys") || b.cfg.runs("idle-cpu") {
		all = append(all, figure{"fleet", "6./7. fleet", b.fleet})
	}
	var skip []row // printed last, where the figures would be
	if b.cfg.postgres != "" {
		all = append(all,
			figure{"pg-heartbeat", "9. heartbeats/s on PostgreSQL", b.pgHeartbeat},
			figure{"pg-flush", "10. liveness flush on PostgreSQL", b.pgFlush},
			figure{"failover", "11. failover", b.failover})
	} else if skipped := slices.DeleteFunc(slices.Clone(pgFigures), func(f string) bool { return !b.cfg.runs(f) }); len(skipped) > 0 {
		why := "skipped: no -postgres URL (make bench passes $FEDPLANE_TEST_POSTGRES when it is set)"
		b.logf("%s: %s", strings.Join(skipped, ", "), why)
		var nums []string
		for _, f := range skipped {
			nums = append(nums, strconv.Itoa(9+slices.Index(pgFigures, f)))
		}
		skip = append(skip, row{figure: fmt.Sprintf("%s. on PostgreSQL (%s)", strings.Join(nums, "., "), strings.Join(skipped, ", ")), fedplane: why, ratio: nan})
	}
	start := time.Now()
	var rows []row
	failed := false
	for _, f := range all {
		if f.name != "fleet" && !b.cfg.runs(f.name) {
			continue
		}
		if ctx.Err() != nil {
			break
		}
		t0 := time.Now()
		b.logf("%s: start", f.name)
		rs, err := f.run(ctx)
		if err != nil {
			failed = true
			b.logf("%s: %v", f.name, err)
			rs = append(rs, row{figure: f.title, ratio: math.NaN(), err: err})
		}
		b.logf("%s: done in %v", f.name, time.Since(t0).Round(time.Second))
		rows = append(rows, rs...)
		b.clearScratch()
	}
	rows = append(rows, skip...)
	for _, l := range machine(b.cfg.bin) {
		fmt.Fprintln(out, l)
	}
	mode := "full"
	if b.cfg.quick {
		mode = "quick (-quick: sizes too small for the ratios to mean much)"
	}
	fmt.Fprintf(out, "run: %s, %v\n\n", mode, time.Since(start).Round(time.Second))
	if err := printTable(out, rows); err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		return 1
	}
	if ctx.Err() != nil {
		fmt.Fprintln(os.Stderr, "Error: interrupted")
		return 1
	}
	missed := false
	for _, r := range rows {
		missed = missed || r.status() == "MISSED"
	}
	if failed || (b.cfg.strict && missed) {
		return 1
	}
	return 0
}
