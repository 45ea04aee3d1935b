package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Bounds on waiting for the processes fedbench starts.
const (
	readyTimeout   = 60 * time.Second
	stopTimeout    = 10 * time.Second
	fladminTimeout = 5 * time.Minute
	// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat:
	// 100 on every Linux architecture Go supports.
	clockTicks = 100
)

// directorProc is a running `director serve` with its addresses.
type directorProc struct {
	cmd     *exec.Cmd
	dataDir string
	grpc    string
	admin   string
	metrics string
	pprof   string // "" unless profiling
	logPath string
	done    chan struct{}
	waitErr error
}

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// startDirector starts the real director binary with its data and log in
// dir, on free loopback ports, and waits until both ports answer. extra
// flags are appended.
func (b *bench) startDirector(ctx context.Context, dir string, extra ...string) (*directorProc, error) {
	d := &directorProc{dataDir: filepath.Join(dir, "data"), logPath: filepath.Join(dir, "director.log"), done: make(chan struct{})}
	var err error
	if d.grpc, err = freeAddr(); err != nil {
		return nil, err
	}
	if d.admin, err = freeAddr(); err != nil {
		return nil, err
	}
	// Metrics on, as an operator runs it: their cost (the gRPC call
	// counter) is in every figure.
	if d.metrics, err = freeAddr(); err != nil {
		return nil, err
	}
	args := []string{"serve", "--data-dir", d.dataDir, "--grpc-listen", d.grpc, "--admin-listen", d.admin, "--metrics-listen", d.metrics}
	if b.cfg.profile != "" {
		if d.pprof, err = freeAddr(); err != nil {
			return nil, err
		}
		args = append(args, "--pprof-listen", d.pprof)
	}
	args = append(args, extra...)
	logf, err := os.Create(d.logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own descriptor
	d.cmd = exec.Command(filepath.Join(b.cfg.bin, "director"), args...)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	d.cmd.SysProcAttr = childAttr()
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start director: %w", err)
	}
	go func() { d.waitErr = d.cmd.Wait(); close(d.done) }()
	if err := d.waitReady(ctx, b); err != nil {
		d.stop()
		return nil, err
	}
	return d, nil
}

// waitReady polls until both ports accept connections and `fladmin status`
// succeeds.
func (d *directorProc) waitReady(ctx context.Context, b *bench) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		select {
		case <-d.done:
			return fmt.Errorf("director exited early (%v); log:\n%s", d.waitErr, d.logTail())
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if dialOK(d.grpc) && dialOK(d.admin) {
			if _, _, err := b.fladmin(ctx, d.admin, "status"); err == nil {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("director not ready after %v; log:\n%s", readyTimeout, d.logTail())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func dialOK(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// pid is the director's process id.
func (d *directorProc) pid() int { return d.cmd.Process.Pid }

// alive returns an error with the log's tail if the director has exited.
func (d *directorProc) alive() error {
	select {
	case <-d.done:
		return fmt.Errorf("director exited (%v); log:\n%s", d.waitErr, d.logTail())
	default:
		return nil
	}
}

// stop sends SIGTERM and waits, killing the director if it lingers.
func (d *directorProc) stop() {
	select {
	case <-d.done:
		return
	default:
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(stopTimeout):
		d.cmd.Process.Kill()
		<-d.done
	}
}

// logTail returns the last lines of the director's log.
func (d *directorProc) logTail() string {
	b, _ := os.ReadFile(d.logPath)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-20):], "\n")
}

// profileCPU fetches a CPU profile of the director over seconds and writes
// it to path. It blocks for the whole profile.
func (d *directorProc) profileCPU(ctx context.Context, seconds int, path string) error {
	return d.fetchProfile(ctx, fmt.Sprintf("profile?seconds=%d", seconds), path)
}

// fetchProfile fetches /debug/pprof/NAME (a query may follow) from the
// director and writes it to path.
func (d *directorProc) fetchProfile(ctx context.Context, name, path string) error {
	if d.pprof == "" {
		return errors.New("director started without --pprof-listen")
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/debug/pprof/%s", d.pprof, name), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("profile: %s", resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// fladmin runs bin/fladmin against admin and returns its stdout and how
// long it took from start to exit. A non-zero exit is an error quoting
// stderr.
func (b *bench) fladmin(ctx context.Context, admin string, args ...string) (string, time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, fladminTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(b.cfg.bin, "fladmin"), append([]string{"--addr", admin}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	t0 := time.Now()
	err := cmd.Run()
	took := time.Since(t0)
	if err != nil {
		return "", took, fmt.Errorf("fladmin %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), took, nil
}

// procMem reads a process's resident set size and its peak, in bytes.
func procMem(pid int) (rss, hwm int64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		k, v, _ := strings.Cut(s.Text(), ":")
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			rss = kb << 10
		case "VmHWM":
			hwm = kb << 10
		}
	}
	if rss == 0 || hwm == 0 {
		return 0, 0, fmt.Errorf("/proc/%d/status: no VmRSS or VmHWM", pid)
	}
	return rss, hwm, s.Err()
}

// resetPeak makes VmHWM start again from the current RSS (Linux 4.0+), so a
// phase's peak is not an earlier phase's.
func resetPeak(pid int) error {
	return os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// peakTracker measures a process's peak RSS growth over a phase.
type peakTracker struct {
	pid    int
	before int64
}

// startPeak resets the peak and records the RSS the growth is counted from.
func startPeak(pid int) (*peakTracker, error) {
	if err := resetPeak(pid); err != nil {
		return nil, fmt.Errorf("reset peak RSS: %w", err)
	}
	rss, _, err := procMem(pid)
	if err != nil {
		return nil, err
	}
	return &peakTracker{pid: pid, before: rss}, nil
}

// growth is VmHWM now minus VmRSS at the start.
func (p *peakTracker) growth() (int64, error) {
	_, hwm, err := procMem(p.pid)
	return hwm - p.before, err
}

// cpuTime reads a process's user plus system CPU time from /proc/PID/stat.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name may hold spaces; fields restart after its ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// dirProfile is a director CPU profile being fetched in the background.
type dirProfile struct {
	done chan struct{}
	err  error
}

// profileDirector starts fetching a CPU profile of d into name under
// -profile, lasting about as long as the phase it covers is expected to
// (the fetch has to be told its length up front). It does nothing unless
// on is true and profiling was asked for. Call wait once the phase is over.
func (b *bench) profileDirector(ctx context.Context, d *directorProc, on bool, expected time.Duration, name string) *dirProfile {
	p := &dirProfile{done: make(chan struct{})}
	if !on || b.cfg.profile == "" {
		close(p.done)
		return p
	}
	seconds := max(1, int(math.Ceil(expected.Seconds())))
	go func() {
		defer close(p.done)
		p.err = d.profileCPU(ctx, seconds, filepath.Join(b.cfg.profile, name))
	}()
	return p
}

// wait waits for the profile and logs a failure to take it; a missing
// profile does not fail the figure.
func (p *dirProfile) wait(b *bench) {
	<-p.done
	if p.err != nil {
		b.logf("profile: %v", p.err)
	}
}

// expect guesses how long a phase moving bytes will take: as long as the
// previous ones on average, or at rate MB/s when there were none.
func expect(prev time.Duration, reps int, bytes int64, rate float64) time.Duration {
	if reps > 0 {
		return prev / time.Duration(reps)
	}
	return time.Duration(float64(bytes) / (rate * 1e6) * float64(time.Second))
}

// heapProfileAt fetches the director's heap profile (live objects, after a
// forced GC) into name under -profile after a delay, in the background. It
// does nothing unless on is true and profiling was asked for.
func (b *bench) heapProfileAt(ctx context.Context, d *directorProc, on bool, after time.Duration, name string) *dirProfile {
	p := &dirProfile{done: make(chan struct{})}
	if !on || b.cfg.profile == "" {
		close(p.done)
		return p
	}
	go func() {
		defer close(p.done)
		if p.err = sleep(ctx, after); p.err == nil {
			p.err = d.fetchProfile(ctx, "heap?gc=1", filepath.Join(b.cfg.profile, name))
		}
	}()
	return p
}
