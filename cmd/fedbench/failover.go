package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fedplane/fedplane/cmd/internal/testjob"
	"github.com/fedplane/fedplane/job"
	"github.com/fedplane/fedplane/tensor"
)

// failoverPeriod is the health-check period of the failover figure's
// replicas; their lease TTL is its default, derived from it.
const failoverPeriod = time.Second

// Bounds on the failover figure's waits.
const (
	failoverStartTimeout = 3 * time.Minute // until the rounds before the kill are done
	failoverTimeout      = time.Minute     // from the kill to the next round's model
)

// failoverRun is one measured kill.
type failoverRun struct {
	took     time.Duration // SIGKILL to the next round's model in the blob store
	takeover time.Duration // SIGKILL to the other replica's "coordinator lease taken"
	training time.Duration // the longest training of that round on one envoy
	ttl      time.Duration // the lease TTL, as the standby logged it
}

// failover is figure 11: the time from SIGKILL of the coordinator, the
// replica that owns the running round, to that round closing on the other
// replica. Each repetition starts two `director serve` replicas on a fresh
// PostgreSQL database and one file:// blob store, health-check period
// failoverPeriod and the default lease TTL, and two `envoy start` given
// both replicas' gRPC ports (in opposite orders), and submits a job whose
// training is cmd/internal/testjob's train.py. Once failoverRound rounds are aggregated
// (round failoverRound's model is in the blob store) the coordinator is
// killed at once; the clock stops when the next round's model appears in
// the blob store, which only the other replica can have written (its log
// is checked for the "round aggregated" line). The envoys' logs give the
// training time of that round, which the failover cannot avoid.
func (b *bench) failover(ctx context.Context) ([]row, error) {
	if _, err := os.Stat(filepath.Join(b.cfg.bin, "envoy")); err != nil {
		return nil, fmt.Errorf("%w: run make build first", err)
	}
	if _, err := exec.LookPath("python3"); err != nil {
		return nil, fmt.Errorf("the job's training command needs python3: %w", err)
	}
	help, _ := exec.CommandContext(ctx, filepath.Join(b.cfg.bin, "director"), "serve", "--help").CombinedOutput()
	// The flag's own line in the list, not the text that may name it.
	if !regexp.MustCompile(`(?m)^\s+--blob-store\s`).Match(help) {
		return nil, errors.New("this director has no --blob-store: replicas cannot share round models")
	}
	var runs []failoverRun
	for rep := range b.cfg.failoverReps {
		r, err := b.failoverOnce(ctx, rep)
		if err != nil {
			return nil, fmt.Errorf("rep %d: %w", rep+1, err)
		}
		b.logf("failover: rep %d: round closed %v after the kill (takeover %v, training %v, lease TTL %v)",
			rep+1, r.took.Round(time.Millisecond), r.takeover.Round(time.Millisecond), r.training.Round(time.Millisecond), r.ttl)
		runs = append(runs, r)
		b.clearScratch()
	}
	slices.SortFunc(runs, func(a, b failoverRun) int { return int(a.took - b.took) })
	m := runs[len(runs)/2]
	rest := m.took - m.training
	limit := 2 * failoverPeriod
	return []row{{
		figure: fmt.Sprintf("11. failover: SIGKILL of the coordinator to the round closing on the other replica, median of %d (range); "+
			"the other's lease taken; the round's training; lease TTL (health check %v)", len(runs), failoverPeriod),
		fedplane: fmt.Sprintf("%s (%s–%s); %s; %s; %v", fmtMs(m.took), fmtMs(runs[0].took), fmtMs(runs[len(runs)-1].took),
			fmtMs(m.takeover), fmtMs(m.training), m.ttl),
		ratio: nan,
		goal: goal{
			text: fmt.Sprintf("less training: %s < %v", fmtMs(rest), limit),
			set:  true,
			met:  rest < limit,
		},
	}}, nil
}

// failoverOnce sets up two replicas, two envoys and a job, kills the
// coordinator once failoverRound rounds are aggregated and measures.
func (b *bench) failoverOnce(ctx context.Context, rep int) (failoverRun, error) {
	k := b.cfg.failoverRound
	dsn, drop, err := b.pgDatabase(ctx)
	if err != nil {
		return failoverRun{}, err
	}
	defer drop()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	dir, err := b.dir(fmt.Sprintf("failover-%d", rep+1))
	if err != nil {
		return failoverRun{}, err
	}
	blobs := filepath.Join(dir, "blobs")

	var replicas []*directorProc
	defer func() {
		for _, d := range replicas {
			d.stop()
		}
	}()
	for i := range 2 {
		rdir := filepath.Join(dir, fmt.Sprintf("replica-%d", i))
		if err := os.Mkdir(rdir, 0o755); err != nil {
			return failoverRun{}, err
		}
		d, err := b.startDirector(ctx, rdir,
			"--database", dsn, "--blob-store", "file://"+blobs,
			"--health-check-period", failoverPeriod.String(), "--log-format", "json")
		if err != nil {
			return failoverRun{}, fmt.Errorf("replica %d: %w", i, err)
		}
		replicas = append(replicas, d)
	}
	var owner, other *directorProc
	err = waitFor(ctx, failoverTimeout, "a replica to take the coordinator lease", func() (bool, error) {
		for i, d := range replicas {
			if len(logRecords(d.logPath, "coordinator lease taken")) > 0 {
				owner, other = d, replicas[1-i]
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		return failoverRun{}, err
	}

	var envoys []*child
	defer func() {
		for _, e := range envoys {
			e.stop()
		}
	}()
	sites := []struct {
		name      string
		constant  string
		samples   string
		directors string
	}{
		// site-a dials the coordinator first, site-b the standby first
		// (which relays it to the coordinator).
		{"site-a", "1", "10", owner.grpc + "," + other.grpc},
		{"site-b", "3", "30", other.grpc + "," + owner.grpc},
	}
	for _, s := range sites {
		shard := filepath.Join(dir, s.name, "shard")
		if err := os.MkdirAll(shard, 0o755); err != nil {
			return failoverRun{}, err
		}
		if err := errors.Join(os.WriteFile(filepath.Join(shard, "constant"), []byte(s.constant), 0o644),
			os.WriteFile(filepath.Join(shard, "samples"), []byte(s.samples), 0o644)); err != nil {
			return failoverRun{}, err
		}
		e, err := startChild(filepath.Join(dir, s.name, "envoy.log"), filepath.Join(b.cfg.bin, "envoy"),
			"start", "--allow-root", "--name", s.name, "--director", s.directors, "--shard-dir", shard,
			"--work-dir", filepath.Join(dir, s.name, "work"), "--kill-grace", "1s", "--log-format", "json")
		if err != nil {
			return failoverRun{}, err
		}
		envoys = append(envoys, e)
	}

	jobDir := filepath.Join(dir, "job")
	if err := writeTrainJob(jobDir, k+2); err != nil {
		return failoverRun{}, err
	}
	id, _, err := b.submit(ctx, owner.admin, jobDir)
	if err != nil {
		return failoverRun{}, err
	}
	models := filepath.Join(blobs, "experiments", id, "models")
	model := func(r int) string { return filepath.Join(models, fmt.Sprintf("round-%04d.safetensors", r)) }
	alive := func() error {
		for _, p := range envoys {
			if err := p.alive(); err != nil {
				return err
			}
		}
		return errors.Join(owner.alive(), other.alive())
	}
	err = waitFor(ctx, failoverStartTimeout, fmt.Sprintf("round %d's model", k-1), func() (bool, error) {
		return exists(model(k)), alive()
	})
	if err != nil {
		return failoverRun{}, fmt.Errorf("%w; coordinator's log:\n%s", err, owner.logTail())
	}
	owner.cmd.Process.Kill()
	killed := time.Now()
	<-owner.done
	err = waitFor(ctx, failoverTimeout, fmt.Sprintf("round %d's model after the kill", k), func() (bool, error) {
		return exists(model(k + 1)), other.alive()
	})
	took := time.Since(killed)
	if err != nil {
		return failoverRun{}, fmt.Errorf("%w; the other replica's log:\n%s", err, other.logTail())
	}

	// The round closed on the other replica (which logs it once the
	// model is committed and the round recorded), and when it took over.
	aggregated := func(p *directorProc) bool {
		return slices.ContainsFunc(logRecords(p.logPath, "round aggregated"), func(r record) bool { return r.str("round") == strconv.Itoa(k) })
	}
	err = waitFor(ctx, failoverTimeout, fmt.Sprintf("the other replica's \"round aggregated\" of round %d, whose model is in the blob store", k), func() (bool, error) {
		return aggregated(other), other.alive()
	})
	if err != nil {
		return failoverRun{}, err
	}
	if aggregated(owner) {
		return failoverRun{}, fmt.Errorf("the killed coordinator logged round %d aggregated: it was killed too late", k)
	}
	run := failoverRun{took: took}
	if taken := logRecords(other.logPath, "coordinator lease taken"); len(taken) > 0 && !taken[0].time().IsZero() {
		run.takeover = taken[0].time().Sub(killed)
	}
	for _, r := range logRecords(other.logPath, "standby: another replica holds") {
		run.ttl = r.duration("period")
	}
	for _, e := range envoys {
		var sum time.Duration
		for _, r := range logRecords(e.logPath, "training done") {
			if r.str("round") == strconv.Itoa(k) {
				sum += r.duration("took")
			}
		}
		run.training = max(run.training, sum)
	}
	return run, nil
}

// writeTrainJob writes the failover job: rounds rounds of testjob.TrainPy
// (it adds the shard's constant to the model in a fraction of a second of
// Python) on both envoys, with a model of five float32s.
func writeTrainJob(dir string, rounds int) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	m := fmt.Sprintf(`{"name": "fedbench-failover", "min_envoys": 2, "rounds": %d, "train": {"command": ["python3", "train.py", "ok"], "timeout": "1m"}}`, rounds)
	var model bytes.Buffer
	if err := tensor.WriteFloat32Safetensors(&model,
		map[string][]float32{"w": {1, 2, 3, 4}, "b": {0.5}},
		map[string][]int64{"w": {2, 2}, "b": {1}}); err != nil {
		return err
	}
	return errors.Join(
		os.WriteFile(filepath.Join(dir, job.ManifestFile), []byte(m), 0o644),
		os.WriteFile(filepath.Join(dir, "train.py"), testjob.TrainPy, 0o644),
		os.WriteFile(filepath.Join(dir, job.ModelFile), model.Bytes(), 0o644))
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// waitFor polls cond every 10 ms until it holds, fails, ctx ends or
// timeout passes.
func waitFor(ctx context.Context, timeout time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no %s after %v", what, timeout)
		}
		if err := sleep(ctx, 10*time.Millisecond); err != nil {
			return err
		}
	}
}

// child is a started binary other than the director (an envoy), its
// output in a log file.
type child struct {
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	waitErr error
}

func startChild(logPath, path string, args ...string) (*child, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the child has its own descriptor
	c := &child{cmd: exec.Command(path, args...), logPath: logPath, done: make(chan struct{})}
	c.cmd.Stdout, c.cmd.Stderr = logf, logf
	c.cmd.SysProcAttr = childAttr()
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", filepath.Base(path), err)
	}
	go func() { c.waitErr = c.cmd.Wait(); close(c.done) }()
	return c, nil
}

// alive returns an error with the log's tail if the process has exited.
func (c *child) alive() error {
	select {
	case <-c.done:
		b, _ := os.ReadFile(c.logPath)
		lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		return fmt.Errorf("%s exited (%v); log:\n%s", filepath.Base(c.cmd.Path), c.waitErr, strings.Join(lines[max(0, len(lines)-20):], "\n"))
	default:
		return nil
	}
}

// stop sends SIGTERM and waits, killing the process if it lingers.
func (c *child) stop() {
	select {
	case <-c.done:
		return
	default:
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(stopTimeout):
		c.cmd.Process.Kill()
		<-c.done
	}
}

// record is one line of a JSON log (--log-format json).
type record map[string]any

// logRecords returns the records of the JSON log at path whose message
// starts with msg; lines that are not JSON are skipped.
func logRecords(path, msg string) []record {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []record
	s := bufio.NewScanner(f)
	s.Buffer(nil, 1<<20)
	for s.Scan() {
		var r record
		if json.Unmarshal(s.Bytes(), &r) != nil {
			continue
		}
		if m, _ := r["msg"].(string); strings.HasPrefix(m, msg) {
			out = append(out, r)
		}
	}
	return out
}

// str is the attribute key as text: a JSON number or string.
func (r record) str(key string) string {
	switch v := r[key].(type) {
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return ""
}

// duration is the attribute key as a duration: slog's JSON handler writes
// one as nanoseconds; a string is parsed as Go writes durations.
func (r record) duration(key string) time.Duration {
	switch v := r[key].(type) {
	case float64:
		return time.Duration(v)
	case string:
		d, _ := time.ParseDuration(v)
		return d
	}
	return 0
}

// time is the record's time; the zero time if it has none.
func (r record) time() time.Time {
	s, _ := r["time"].(string)
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}
