package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/api"
)

// fleet runs figures 6 and 7 on one real director with fleetEnvoys
// registered envoys, each on its own gRPC connection as real envoys are,
// heartbeating every idlePeriod from the moment they are registered:
//
//   - 6: `fladmin list-envoys` wall time (median of listReps), with
//     `fladmin status` as the fixed cost of any fladmin command;
//   - 7: the director's CPU time (utime+stime from /proc) over idleWindow,
//     after idleWarmup, as a share of one core; and, as its floor, the CPU
//     time of a no-op gRPC server (a child fedbench) under the same
//     connections and heartbeats; and the director's memory per connected
//     envoy: its growth from before the fleet dialed to the end of the
//     CPU window, over fleetEnvoys.
func (b *bench) fleet(ctx context.Context) ([]row, error) {
	n := b.cfg.fleetEnvoys
	dir, err := b.dir("fleet")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	d, err := b.startDirector(ctx, dir, "--health-check-period", b.cfg.idlePeriod.String())
	if err != nil {
		return nil, err
	}
	defer d.stop()
	idleMem, err := d.sampleMem(ctx)
	if err != nil {
		return nil, err
	}
	l, err := b.startLoad(ctx, d.grpc)
	if err != nil {
		return nil, err
	}
	defer l.close()

	var rows []row
	if b.cfg.runs("list-envoys") {
		rs, err := b.listEnvoys(ctx, d, n)
		if err != nil {
			return nil, err
		}
		rows = append(rows, rs...)
	}
	if !b.cfg.runs("idle-cpu") {
		return rows, nil
	}
	prof := b.profileDirector(ctx, d, true, b.cfg.idleWindow, "idle.pprof")
	fed, err := l.measure(ctx, d.pid())
	prof.wait(b)
	if err != nil {
		return rows, err
	}
	if err := d.alive(); err != nil {
		return rows, err
	}
	fleetMem, err := d.sampleMem(ctx)
	if err != nil {
		return rows, err
	}
	if b.cfg.profile != "" {
		// Where the memory per envoy goes: in use at the last GC.
		if err := d.fetchProfile(ctx, "heap", filepath.Join(b.cfg.profile, "idle-heap.pprof")); err != nil {
			b.logf("profile: %v", err)
		}
	}
	if err := l.close(); err != nil {
		return rows, err
	}
	d.stop()
	b.logf("idle-cpu: director %.1f%% of a core at %.0f heartbeats/s", fed.share, fed.rate)
	per := growthPer(idleMem, fleetMem, n)
	b.logf("idle-cpu: director RSS %s before the fleet, %s with it: %.1f KiB per envoy (Go heap %.1f KiB, stacks %.1f KiB, %.1f goroutines)",
		fmtMiB(idleMem.rss), fmtMiB(fleetMem.rss), per.rss, per.heap, per.stack, per.goroutines)

	// The floor, after the director's connections are gone: two fleets of
	// 10,000 connections would not fit under a 20,000 descriptor limit.
	noop, err := startNoop(ctx)
	if err != nil {
		return rows, err
	}
	defer noop.stop()
	noopIdle, _, err := procMem(noop.pid())
	if err != nil {
		return rows, err
	}
	nl, err := b.startLoad(ctx, noop.addr)
	if err != nil {
		return rows, err
	}
	defer nl.close()
	floor, err := nl.measure(ctx, noop.pid())
	if err != nil {
		return rows, err
	}
	noopFleet, _, err := procMem(noop.pid())
	if err != nil {
		return rows, err
	}
	noopPer := float64(noopFleet-noopIdle) / float64(n) / 1024
	b.logf("idle-cpu: no-op server RSS %s before the fleet, %s with it: %.1f KiB per envoy", fmtMiB(noopIdle), fmtMiB(noopFleet), noopPer)
	if err := nl.close(); err != nil {
		return rows, err
	}
	b.logf("idle-cpu: no-op server %.1f%% of a core at %.0f heartbeats/s", floor.share, floor.rate)

	r := row{
		figure:   fmt.Sprintf("7. director CPU, %s envoys × 1 conn, %.0f heartbeats/s (floor: no-op gRPC server)", fmtCount(n), fed.rate),
		fedplane: fmt.Sprintf("%.1f%% of a core", fed.share),
		floor:    fmt.Sprintf("%.1f%% of a core", floor.share),
		ratio:    floor.share / fed.share,
	}
	r.goal = below(fed.share, 10, "% of a core")
	mem := row{
		figure:   fmt.Sprintf("7. director RSS, %s connected envoys (floor column: before they connected)", fmtCount(n)),
		fedplane: fmtMiB(fleetMem.rss),
		floor:    fmtMiB(idleMem.rss),
		ratio:    nan,
	}
	perRow := row{
		figure:   "7. per connected envoy: RSS growth ÷ envoys; Go heap in use; stacks; goroutines (floor: no-op server's RSS growth)",
		fedplane: fmt.Sprintf("%.1f KiB; %.1f KiB; %.1f KiB; %.1f", per.rss, per.heap, per.stack, per.goroutines),
		floor:    fmt.Sprintf("%.1f KiB", noopPer),
		ratio:    noopPer / per.rss,
		goal:     atMost(per.rss, 16, " KiB"),
	}
	return append(rows, r, mem, perRow), nil
}

// load is a fleet of fleetEnvoys envoys, one connection each, registered
// with a server and heartbeating it every idlePeriod.
type load struct {
	b        *bench
	f        *fleet
	hb       *pacer
	warmedUp time.Time
	closed   bool
}

// startLoad dials and registers the fleet with the server at addr and
// starts heartbeating.
func (b *bench) startLoad(ctx context.Context, addr string) (*load, error) {
	t0 := time.Now()
	f, err := dialFleet(addr, b.cfg.fleetEnvoys, b.cfg.fleetEnvoys)
	if err != nil {
		return nil, err
	}
	if err := f.register(ctx, b.cfg.fleetWorkers); err != nil {
		f.close()
		return nil, err
	}
	b.logf("fleet: %d envoys registered with %s in %v", b.cfg.fleetEnvoys, addr, time.Since(t0).Round(time.Millisecond))
	return &load{b: b, f: f, hb: f.pace(ctx, b.cfg.idlePeriod, b.cfg.fleetWorkers), warmedUp: time.Now().Add(b.cfg.idleWarmup)}, nil
}

// idle is a CPU measurement under load.
type idle struct {
	share float64 // percent of one core
	rate  float64 // heartbeats per second
}

// measure waits for the warm-up to end, then measures pid's CPU time over
// idleWindow.
func (l *load) measure(ctx context.Context, pid int) (idle, error) {
	if err := sleep(ctx, time.Until(l.warmedUp)); err != nil {
		return idle{}, err
	}
	cpu0, err := cpuTime(pid)
	if err != nil {
		return idle{}, err
	}
	sent0 := l.hb.sent.Load()
	w0 := time.Now()
	if err := sleep(ctx, l.b.cfg.idleWindow); err != nil {
		return idle{}, err
	}
	cpu1, err := cpuTime(pid)
	if err != nil {
		return idle{}, err
	}
	window := time.Since(w0)
	sent := l.hb.sent.Load() - sent0
	if late := l.hb.late.Load(); late > 0 {
		l.b.logf("idle-cpu: %d heartbeats waited for a free worker", late)
	}
	return idle{share: 100 * (cpu1 - cpu0).Seconds() / window.Seconds(), rate: float64(sent) / window.Seconds()}, nil
}

// close stops heartbeating and closes the connections, and returns the
// first error a heartbeat met. It may be called more than once.
func (l *load) close() error {
	err := l.hb.stop()
	if !l.closed {
		l.closed = true
		l.f.close()
	}
	return err
}

// listEnvoys is figure 6: fladmin list-envoys against fladmin status,
// alternating, medians of listReps runs each.
func (b *bench) listEnvoys(ctx context.Context, d *directorProc, n int) ([]row, error) {
	var list, status []time.Duration
	prof := b.profileDirector(ctx, d, true, time.Duration(b.cfg.listReps)*time.Second, "list-envoys.pprof")
	defer prof.wait(b)
	for rep := range b.cfg.listReps {
		out, took, err := b.fladmin(ctx, d.admin, "list-envoys")
		if err != nil {
			return nil, err
		}
		if got := strings.Count(out, "bench-envoy-"); got != n {
			return nil, fmt.Errorf("fladmin list-envoys listed %d envoys, want %d", got, n)
		}
		list = append(list, took)
		_, took, err = b.fladmin(ctx, d.admin, "status")
		if err != nil {
			return nil, err
		}
		status = append(status, took)
		b.logf("list-envoys: rep %d: list-envoys %v, status %v", rep+1, list[rep].Round(time.Millisecond), took.Round(time.Millisecond))
	}
	l, s := median(list), median(status)
	parts, err := b.listEnvoysParts(ctx, d)
	if err != nil {
		return nil, err
	}
	r := row{
		figure:   fmt.Sprintf("6. fladmin list-envoys, %s envoys, wall, median of %d (floor: fladmin status)", fmtCount(n), b.cfg.listReps),
		fedplane: fmtMs(l),
		floor:    fmtMs(s),
		ratio:    s.Seconds() / l.Seconds(),
	}
	r.goal = below(float64(l)/float64(time.Millisecond), 200, " ms")
	return []row{r, parts}, nil
}

// listEnvoysParts splits list-envoys' wall time: the director's reply as a
// raw reader gets it (request sent to first byte: the director building the
// reply; first byte to last: encoding's tail and the transfer), and fladmin
// with -o json (no table to render). It reports the medians of listReps
// runs.
func (b *bench) listEnvoysParts(ctx context.Context, d *directorProc) (row, error) {
	var first, last, asJSON []time.Duration
	var size int64
	for range b.cfg.listReps {
		f, l, n, err := rawReply(ctx, d.admin, api.CmdListEnvoys)
		if err != nil {
			return row{}, err
		}
		first, last, size = append(first, f), append(last, l), n
		_, took, err := b.fladmin(ctx, d.admin, "-o", "json", "list-envoys")
		if err != nil {
			return row{}, err
		}
		asJSON = append(asJSON, took)
	}
	return row{
		figure:   "6. list-envoys parts: reply size; director first byte; last byte; fladmin -o json",
		fedplane: fmt.Sprintf("%s; %s; %s; %s", fmtMiB(size), fmtMs(median(first)), fmtMs(median(last)), fmtMs(median(asJSON))),
		ratio:    nan,
	}, nil
}

// rawReply sends command to the admin port at addr and reads the text reply
// without decoding it: the time to its first byte, to its last, and its size.
func rawReply(ctx context.Context, addr, command string) (first, last time.Duration, size int64, err error) {
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		return 0, 0, 0, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(fladminTimeout))
	t0 := time.Now()
	if err := adminproto.WriteMessage(conn, adminproto.NewRequest(command)); err != nil {
		return 0, 0, 0, err
	}
	br := bufio.NewReaderSize(conn, 64<<10)
	if _, err := br.Peek(1); err != nil {
		return 0, 0, 0, fmt.Errorf("%s: no reply: %w", command, err)
	}
	first = time.Since(t0)
	msg, err := adminproto.ReadText(br, adminproto.MaxTextSize)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("%s: %w", command, err)
	}
	return first, time.Since(t0), int64(len(msg)), nil
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
