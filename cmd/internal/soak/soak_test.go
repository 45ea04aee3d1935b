//go:build soak

package soak

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/cmd/internal/proctest"
	"github.com/fedplane/fedplane/tensor"
)

// The simulated federation and the checks on the director.
const (
	defaultDuration = 3 * time.Minute
	envoys          = 1000
	conns           = 8                // gRPC connections the envoys share
	period          = 10 * time.Second // --health-check-period
	sampleEvery     = 10 * time.Second
	submitEvery     = 2 * time.Second
	listEvery       = 30 * time.Second
	rpcTimeout      = 10 * time.Second
	fladminTimeout  = time.Minute

	goroutineSlack = 20       // end may exceed warm-up by this many goroutines
	rssSlack       = 32 << 20 // ... and by this many bytes of RSS,
	rssSlackFrac   = 0.25     // or this fraction of the warm-up RSS, whichever is more
	maxErrorsShown = 20
)

// manifest keeps every soak job pending for ever: no federation here has
// 2,000 envoys, and the director accepts min_envoys above the envoys it knows.
const manifest = `{"name": "soak", "min_envoys": 2000, "rounds": 1,
 "train": {"command": ["python3", "train.py"], "timeout": "1m"}}`

// resultFiles are what download-job unpacks for a pending job.
var resultFiles = []string{"job.json", "status.json", "metrics.csv", "models/last.safetensors"}

func TestSoak(t *testing.T) {
	dur := defaultDuration
	if v := os.Getenv("SOAK_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("SOAK_DURATION=%q: want a positive duration such as 3m", v)
		}
		dur = d
	}
	s := &soak{scratch: t.TempDir()}
	s.bin = mustBuild(t)
	s.startDirector(t)

	begin := time.Now()
	end := begin.Add(dur)
	cc := mustDial(t, s.grpc)
	clients := make([]directorpb.DirectorClient, len(cc))
	for i, c := range cc {
		clients[i] = directorpb.NewDirectorClient(c)
	}
	s.register(t, clients)
	warm := s.sample(t, begin)
	t.Logf("%8s %8s %10s %10s %6s %8s", "elapsed", "rss MiB", "goroutines", "heartbeats", "jobs", "data MiB")
	peak := warm.rss
	logRow := func(x sample) {
		peak = max(peak, x.rss)
		t.Logf("%8s %8.1f %10d %10d %6d %8.1f", x.at.Round(time.Second), mib(x.rss), x.goroutines, x.heartbeats, x.jobs, mib(x.data))
	}
	logRow(warm)

	var wg sync.WaitGroup
	for i := range envoys {
		c := clients[i%conns]
		wg.Go(func() { s.heartbeatLoop(t, c, envoyName(i), end) })
	}
	jobDir := writeJob(t, s.scratch)
	wg.Go(func() { s.jobLoop(t, jobDir, end) })
	wg.Go(func() { s.listLoop(t, end) })
	for next := time.Now().Add(sampleEvery); next.Before(end); next = next.Add(sampleEvery) {
		time.Sleep(time.Until(next))
		logRow(s.sample(t, begin))
	}
	wg.Wait()
	s.checkEnvoys(t) // the last heartbeats are at most a period old: all still online
	last := s.sample(t, begin)
	logRow(last)

	for _, c := range cc {
		c.Close()
	}
	s.stopDirector(t)
	s.checkDataDir()
	s.checkLog()

	errs := s.errCount.Load()
	fmt.Printf("SOAK: duration=%v envoys=%d heartbeats=%d jobs=%d rss_mib warmup=%.1f end=%.1f peak=%.1f goroutines warmup=%d end=%d errors=%d\n",
		dur, envoys, s.heartbeats.Load(), s.jobs.Load(), mib(warm.rss), mib(last.rss), mib(peak), warm.goroutines, last.goroutines, errs)

	if errs != 0 {
		s.mu.Lock()
		t.Errorf("%d errors, the first %d:\n%s", errs, len(s.errs), strings.Join(s.errs, "\n"))
		s.mu.Unlock()
	}
	if last.goroutines > warm.goroutines+goroutineSlack {
		t.Errorf("goroutines grew from %d after warm-up to %d at the end (allowed +%d): a goroutine leak",
			warm.goroutines, last.goroutines, goroutineSlack)
	}
	allowed := max(rssSlack, int64(rssSlackFrac*float64(warm.rss)))
	if last.rss > warm.rss+allowed {
		t.Errorf("RSS grew from %.1f MiB after warm-up to %.1f MiB at the end (allowed +%.1f MiB)",
			mib(warm.rss), mib(last.rss), mib(allowed))
	}
	if s.jobs.Load() == 0 {
		t.Error("no job went through submit, download and delete")
	}
}

// soak is one run: the director under test and what the load did to it.
type soak struct {
	bin     string // holds director and fladmin
	scratch string
	dataDir string

	grpc, admin, pprof string
	director           *proctest.Proc

	heartbeats atomic.Int64 // sent, answered or not
	jobs       atomic.Int64 // submitted, downloaded and deleted
	errCount   atomic.Int64
	mu         sync.Mutex
	errs       []string // the first maxErrorsShown
}

// fail records an error of the load without stopping it, so one run shows
// everything that went wrong.
func (s *soak) fail(format string, args ...any) {
	if s.errCount.Add(1) > maxErrorsShown {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.errs = append(s.errs, fmt.Sprintf(format, args...))
}

func envoyName(i int) string { return fmt.Sprintf("sim-%04d", i) }

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// mustBuild builds the director and fladmin binaries into a temp folder.
func mustBuild(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	out, err := exec.Command("go", "build", "-o", dir,
		"github.com/fedplane/fedplane/cmd/director", "github.com/fedplane/fedplane/cmd/fladmin").CombinedOutput()
	if err != nil {
		t.Fatalf("build binaries: %v\n%s", err, out)
	}
	return dir
}

// startDirector starts `director serve` on ports the kernel picks, and
// learns them and the profile server's from what the director logs: its
// gRPC and admin ports take connections once it logs that it serves, the
// profile port once it logs "pprof serving" (the two lines come in either
// order). On failure the director's log is printed as the test ends.
func (s *soak) startDirector(t *testing.T) {
	t.Helper()
	s.dataDir = filepath.Join(s.scratch, "data")
	var addrs proctest.Addrs
	s.director, addrs = proctest.StartDirector(t, filepath.Join(s.bin, "director"), "serve",
		"--data-dir", s.dataDir, "--grpc-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
		"--health-check-period", period.String(), "--pprof-listen", "127.0.0.1:0")
	s.grpc, s.admin = addrs.GRPC, addrs.Admin
	s.pprof = s.director.WaitRecord(t, proctest.StartTimeout, "pprof serving")[api.LogAddr]
	if s.pprof == "" {
		t.Fatal(`the director's "pprof serving" line lacks addr=`)
	}
}

// stopDirector stops the director as an operator would and expects a clean
// exit, which also shows nothing hangs on the envoys' connections.
func (s *soak) stopDirector(t *testing.T) {
	t.Helper()
	s.director.Cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.director.Done:
		if s.director.Err != nil {
			s.fail("director exited with %v after SIGTERM", s.director.Err)
		}
	case <-time.After(15 * time.Second):
		s.fail("director did not exit within 15s of SIGTERM")
	}
}

// mustDial opens the connections the simulated envoys share.
func mustDial(t *testing.T, addr string) []*grpc.ClientConn {
	t.Helper()
	cc := make([]*grpc.ClientConn, conns)
	for i := range cc {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		cc[i] = conn
	}
	return cc
}

// register registers every simulated envoy, a few dozen at a time.
func (s *soak) register(t *testing.T, clients []directorpb.DirectorClient) {
	t.Helper()
	t0 := time.Now()
	next := make(chan int)
	var wg sync.WaitGroup
	for range 4 * conns {
		wg.Go(func() {
			for i := range next {
				ctx, cancel := context.WithTimeout(t.Context(), rpcTimeout)
				resp, err := clients[i%conns].UpdateShardInfo(ctx, &directorpb.UpdateShardInfoRequest{ShardInfo: &directorpb.ShardInfo{
					NodeInfo:         &directorpb.NodeInfo{Name: envoyName(i)},
					ShardDescription: "simulated by the soak test",
					NSamples:         uint64(100 + i),
					SampleShape:      []string{"4"},
					TargetShape:      []string{"1"},
				}})
				cancel()
				switch {
				case err != nil:
					s.fail("register %s: %v", envoyName(i), err)
				case !resp.GetAccepted():
					s.fail("register %s: not accepted", envoyName(i))
				}
			}
		})
	}
	for i := range envoys {
		next <- i
	}
	close(next)
	wg.Wait()
	t.Logf("registered %d envoys in %v", envoys, time.Since(t0).Round(time.Millisecond))
	if n := s.errCount.Load(); n != 0 {
		t.Fatalf("%d registrations failed: %v", n, s.errs)
	}
}

// heartbeatLoop sends one envoy's heartbeats every period, starting at a
// random point of the first period, until end.
func (s *soak) heartbeatLoop(t *testing.T, c directorpb.DirectorClient, name string, end time.Time) {
	for next := time.Now().Add(rand.N(period)); next.Before(end); next = next.Add(period) {
		time.Sleep(time.Until(next))
		s.heartbeats.Add(1)
		ctx, cancel := context.WithTimeout(t.Context(), rpcTimeout)
		resp, err := c.UpdateEnvoyStatus(ctx, &directorpb.UpdateEnvoyStatusRequest{Name: name})
		cancel()
		switch {
		case err != nil:
			s.fail("heartbeat %s: %v", name, err)
		case resp.GetHealthCheckPeriod().AsDuration() != period:
			s.fail("heartbeat %s: period %v, want %v", name, resp.GetHealthCheckPeriod().AsDuration(), period)
		}
	}
}

// writeJob writes the soak job's folder: job.json, a tiny model and a
// train.py that never runs.
func writeJob(t *testing.T, parent string) string {
	t.Helper()
	dir := filepath.Join(parent, "job")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	var model bytes.Buffer
	err := tensor.WriteFloat32Safetensors(&model,
		map[string][]float32{"w": {0.1, 0.2, 0.3, 0.4}, "b": {0}},
		map[string][]int64{"w": {1, 4}, "b": {1}})
	if err != nil {
		t.Fatal(err)
	}
	for name, body := range map[string][]byte{
		"job.json":          []byte(manifest),
		"model.safetensors": model.Bytes(),
		"train.py":          []byte("# never runs: the soak job stays pending\n"),
	} {
		if err := os.WriteFile(filepath.Join(dir, name), body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// jobLoop submits, downloads and deletes a job every submitEvery until end.
func (s *soak) jobLoop(t *testing.T, jobDir string, end time.Time) {
	dl := filepath.Join(s.scratch, "downloads")
	for next := time.Now(); next.Before(end); next = next.Add(submitEvery) {
		time.Sleep(time.Until(next))
		if err := s.jobCycle(t, jobDir, dl); err != nil {
			s.fail("job: %v", err)
		} else {
			s.jobs.Add(1)
		}
		if now := time.Now(); next.Add(submitEvery).Before(now) {
			next = now.Add(-submitEvery) // a slow cycle: go on at once, without catching up
		}
	}
}

func (s *soak) jobCycle(t *testing.T, jobDir, dl string) error {
	out, err := s.fladmin(t, "-o", "json", "submit-job", "--no-progress", jobDir)
	if err != nil {
		return err
	}
	var submitted struct {
		JobID string `json:"job_id"`
	}
	if err := json.Unmarshal(out, &submitted); err != nil || submitted.JobID == "" {
		return fmt.Errorf("submit-job printed %q (%v)", out, err)
	}
	id := submitted.JobID
	if _, err := s.fladmin(t, "download-job", id, "-d", dl); err != nil {
		return err
	}
	for _, f := range resultFiles {
		if _, err := os.Stat(filepath.Join(dl, id, f)); err != nil {
			return fmt.Errorf("download-job %s: %w", id, err)
		}
	}
	if err := os.RemoveAll(filepath.Join(dl, id)); err != nil {
		return err
	}
	_, err = s.fladmin(t, "delete-job", id)
	return err
}

// listLoop checks the envoy list every listEvery until end.
func (s *soak) listLoop(t *testing.T, end time.Time) {
	for next := time.Now().Add(listEvery); next.Before(end); next = next.Add(listEvery) {
		time.Sleep(time.Until(next))
		s.checkEnvoys(t)
	}
}

// checkEnvoys expects list-envoys to show every simulated envoy, online.
func (s *soak) checkEnvoys(t *testing.T) {
	out, err := s.fladmin(t, "-o", "json", "list-envoys")
	if err != nil {
		s.fail("%v", err)
		return
	}
	var list []struct {
		Name   string `json:"name"`
		Online bool   `json:"online"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		s.fail("list-envoys -o json: %v", err)
		return
	}
	online := 0
	for _, e := range list {
		if e.Online && strings.HasPrefix(e.Name, "sim-") {
			online++
		}
	}
	if len(list) != envoys || online != envoys {
		s.fail("list-envoys: %d envoys, %d of them simulated and online; want %d, all online", len(list), online, envoys)
	}
}

// fladmin runs fladmin against the director and returns its stdout; a
// non-zero exit is an error carrying stderr.
func (s *soak) fladmin(t *testing.T, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(t.Context(), fladminTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(s.bin, "fladmin"), append([]string{"--addr", s.admin}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("fladmin %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// sample is the director's state at one moment of the run.
type sample struct {
	at         time.Duration // since the director started serving
	rss        int64         // bytes
	goroutines int
	heartbeats int64
	jobs       int64
	data       int64 // bytes under --data-dir
}

func (s *soak) sample(t *testing.T, begin time.Time) sample {
	x := sample{at: time.Since(begin), heartbeats: s.heartbeats.Load(), jobs: s.jobs.Load()}
	var err error
	if x.rss, err = rss(s.director.Cmd.Process.Pid); err != nil {
		s.fail("sample RSS: %v", err)
	}
	if x.goroutines, err = goroutines(t.Context(), s.pprof); err != nil {
		s.fail("sample goroutines: %v", err)
	}
	x.data = dirSize(s.dataDir)
	return x
}

// rss reads a process's resident set size from /proc/<pid>/status.
func rss(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// VmRSS:	   23456 kB
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("/proc/%d/status has no VmRSS", pid)
}

// pprofClient opens a connection per request, so no idle connection of ours
// adds a goroutine to the director's count.
var pprofClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// goroutines reads the director's goroutine count from the first line of
// its goroutine profile: "goroutine profile: total N".
func goroutines(ctx context.Context, addr string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/debug/pprof/goroutine?debug=1", nil)
	if err != nil {
		return 0, err
	}
	resp, err := pprofClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil && err != io.EOF {
		return 0, err
	}
	io.Copy(io.Discard, resp.Body)
	n, ok := strings.CutPrefix(strings.TrimSpace(line), "goroutine profile: total ")
	if resp.StatusCode != http.StatusOK || !ok {
		return 0, fmt.Errorf("goroutine profile: %s, first line %q", resp.Status, line)
	}
	return strconv.Atoi(n)
}

// dirSize is the total size of the files under dir.
func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if fi, err := d.Info(); err == nil {
				n += fi.Size()
			}
		}
		return nil
	})
	return n
}

// checkDataDir expects every job's files gone: the disk stays flat.
func (s *soak) checkDataDir() {
	for _, sub := range []string{"experiments", "tmp"} {
		entries, err := os.ReadDir(filepath.Join(s.dataDir, sub))
		if err != nil && !os.IsNotExist(err) {
			s.fail("data dir: %v", err)
		}
		if len(entries) != 0 {
			s.fail("data dir: %d entries left in %s/ after every job was deleted", len(entries), sub)
		}
	}
}

// checkLog counts the director's error lines as errors of the run.
func (s *soak) checkLog() {
	for line := range strings.Lines(s.director.Log.String()) {
		if strings.Contains(line, "level=ERROR") {
			s.fail("director logged: %s", strings.TrimSpace(line))
		}
	}
}
