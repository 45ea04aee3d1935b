package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fedplane/fedplane/cmd/internal/proctest"
	"github.com/fedplane/fedplane/cmd/internal/testjob"
	"github.com/fedplane/fedplane/tensor"
)

// fastDirector are director flags that make liveness quick to observe.
var fastDirector = []string{"--health-check-period", "300ms", "--offline-after", "1500ms"}

// makeShard writes a site's data dir: the constant its training adds and
// its sample count.
func makeShard(tb testing.TB, constant float64, samples int) string {
	tb.Helper()
	dir := tb.TempDir()
	os.WriteFile(filepath.Join(dir, "constant"), []byte(strconv.FormatFloat(constant, 'g', -1, 64)), 0o644)
	os.WriteFile(filepath.Join(dir, "samples"), []byte(strconv.Itoa(samples)), 0o644)
	return dir
}

// trainJob writes a job folder running testjob.TrainPy (train.py) with mode. It
// skips the test when python3 is missing: a test writes a training job to
// run it (tests that only upload a job use writeJob).
func trainJob(tb testing.TB, name, participants string, rounds int, mode, timeout string) string {
	tb.Helper()
	proctest.NeedPython(tb)
	dir := filepath.Join(tb.TempDir(), "job")
	os.MkdirAll(dir, 0o755)
	script := testjob.TrainPy
	manifest := fmt.Sprintf(`{"name": %q, %s, "rounds": %d, "train": {"command": ["python3", "train.py", %q], "timeout": %q}}`,
		name, participants, rounds, mode, timeout)
	os.WriteFile(filepath.Join(dir, "train.py"), script, 0o644)
	os.WriteFile(filepath.Join(dir, "job.json"), []byte(manifest), 0o644)
	os.WriteFile(filepath.Join(dir, "model.safetensors"), smallModel(tb), 0o644)
	return dir
}

// startEnvoy starts `envoy start` against d.
func startEnvoy(tb testing.TB, d *director, name, shard string, extra ...string) *proc {
	tb.Helper()
	args := append([]string{"start", "--allow-root", "--name", name, "--director", d.grpc, "--shard-dir", shard,
		"--samples", "10", "--work-dir", filepath.Join(tb.TempDir(), "work"), "--kill-grace", "1s", "--log-level", "debug"}, extra...)
	return start(tb, "envoy", args...)
}

// envoyState is an envoy as list-envoys -o json shows it.
type envoyState struct {
	Name              string `json:"name"`
	Online            bool   `json:"online"`
	Experiment        string `json:"experiment"`
	ExperimentRunning bool   `json:"experimentRunning"`
}

func listEnvoys(tb testing.TB, d *director) []envoyState {
	tb.Helper()
	var out []envoyState
	if err := json.Unmarshal([]byte(mustFladmin(tb, d.admin, "-o", "json", "list-envoys")), &out); err != nil {
		tb.Fatal(err)
	}
	return out
}

// waitOnline waits until the named envoys are all online.
func waitOnline(tb testing.TB, d *director, names ...string) {
	tb.Helper()
	eventually(tb, 60*time.Second, fmt.Sprintf("envoys %v online", names), func() bool {
		online := map[string]bool{}
		for _, e := range listEnvoys(tb, d) {
			online[e.Name] = e.Online
		}
		for _, n := range names {
			if !online[n] {
				return false
			}
		}
		return true
	})
}

// jobState is a job as show-job -o json shows it.
type jobState struct {
	JobID  string `json:"job_id"`
	Status string `json:"status"`
	Reason string `json:"reason"`
	Envoys []struct {
		Name   string `json:"name"`
		Status string `json:"status"`
		Reason string `json:"reason"`
	} `json:"envoys"`
}

func showJob(tb testing.TB, d *director, id string) jobState {
	tb.Helper()
	var j jobState
	if err := json.Unmarshal([]byte(mustFladmin(tb, d.admin, "-o", "json", "show-job", id)), &j); err != nil {
		tb.Fatal(err)
	}
	return j
}

func submitJob(tb testing.TB, d *director, dir string) string {
	tb.Helper()
	out := mustFladmin(tb, d.admin, "submit-job", dir)
	return strings.TrimSpace(strings.TrimPrefix(out, "Submitted job "))
}

// waitPID waits for the training script's pid file in shard and returns the pid.
func waitPID(tb testing.TB, shard string) int {
	tb.Helper()
	var pid int
	eventually(tb, 30*time.Second, "training process to start", func() bool {
		b, err := os.ReadFile(filepath.Join(shard, "train.pid"))
		if err != nil {
			return false
		}
		pid, err = strconv.Atoi(strings.TrimSpace(string(b)))
		return err == nil && pid > 0
	})
	return pid
}

// alive reports whether process pid exists (and is not a zombie).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	return err == nil && !strings.Contains(string(b), ") Z ")
}

func TestTwoEnvoysFinishAJob(t *testing.T) {
	d := startDirectorAdmin(t, t.TempDir(), fastDirector...)
	startEnvoy(t, d, "site-a", makeShard(t, 1, 10))
	startEnvoy(t, d, "site-b", makeShard(t, 4, 30))
	waitOnline(t, d, "site-a", "site-b")

	id := submitJob(t, d, trainJob(t, "two-sites", `"envoys": ["site-a", "site-b"]`, 1, "ok", "1m"))
	r := fladmin(t, d.admin, "wait-job", id, "--wait-timeout", "60s")
	if r.code != 0 || !strings.Contains(r.stdout, "finished") {
		t.Fatalf("wait-job: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	j := showJob(t, d, id)
	if len(j.Envoys) != 2 || j.Envoys[0].Status != "finished" || j.Envoys[1].Status != "finished" {
		t.Fatalf("participants: %+v", j.Envoys)
	}
	// Round 1's model = model + (1×10 + 4×30)/40 = model + 3.25 (weights from n_samples).
	model := readRoundModel(t, d.dataDir, id, 1)
	want := map[string][]float32{"w": {4.25, 5.25, 6.25, 7.25}, "b": {3.75}}
	for name, vals := range want {
		for i, v := range vals {
			if got := model[name][i]; abs(got-v) > 1e-5 {
				t.Fatalf("aggregated %s[%d]: got %v, want %v", name, i, got, v)
			}
		}
	}
	eventually(t, 10*time.Second, "envoys idle again", func() bool {
		for _, e := range listEnvoys(t, d) {
			if e.ExperimentRunning || e.Experiment != "" {
				return false
			}
		}
		return true
	})
}

func abs(f float32) float32 {
	if f < 0 {
		return -f
	}
	return f
}

func TestFailingCommandReportsStderr(t *testing.T) {
	d := startDirectorAdmin(t, t.TempDir(), fastDirector...)
	startEnvoy(t, d, "site-a", makeShard(t, 1, 10))
	waitOnline(t, d, "site-a")
	id := submitJob(t, d, trainJob(t, "failing", `"min_envoys": 1`, 1, "fail", "1m"))
	r := fladmin(t, d.admin, "wait-job", id, "--wait-timeout", "60s")
	if r.code != 1 || !strings.Contains(r.stdout, "failed") {
		t.Fatalf("wait-job: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	j := showJob(t, d, id)
	for _, want := range []string{"site-a", "status 3", "the shard is corrupt at row 17"} {
		if !strings.Contains(j.Reason, want) {
			t.Fatalf("reason %q lacks %q", j.Reason, want)
		}
	}
}

func TestTimeoutKillsTheProcess(t *testing.T) {
	d := startDirectorAdmin(t, t.TempDir(), fastDirector...)
	shard := makeShard(t, 1, 10)
	startEnvoy(t, d, "site-a", shard)
	waitOnline(t, d, "site-a")
	id := submitJob(t, d, trainJob(t, "slow", `"min_envoys": 1`, 1, "sleep", "2s"))
	pid := waitPID(t, shard)
	r := fladmin(t, d.admin, "wait-job", id, "--wait-timeout", "60s")
	if r.code != 1 || !strings.Contains(r.stdout, "timed out") {
		t.Fatalf("wait-job: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	eventually(t, 10*time.Second, "timed-out process gone", func() bool { return !alive(pid) })
}

func TestAbortKillsTheProcess(t *testing.T) {
	d := startDirectorAdmin(t, t.TempDir(), fastDirector...)
	shard := makeShard(t, 1, 10)
	startEnvoy(t, d, "site-a", shard)
	waitOnline(t, d, "site-a")
	id := submitJob(t, d, trainJob(t, "to-abort", `"min_envoys": 1`, 1, "sleep", "10m"))
	pid := waitPID(t, shard)
	mustFladmin(t, d.admin, "abort-job", id)
	if j := showJob(t, d, id); j.Status != "aborted" {
		t.Fatalf("status right after abort: %s", j.Status)
	}
	// Two health-check periods (300ms) plus the kill grace (1s) and slack.
	eventually(t, 5*time.Second, "aborted process gone", func() bool { return !alive(pid) })
	eventually(t, 5*time.Second, "envoy idle", func() bool {
		e := listEnvoys(t, d)
		return len(e) == 1 && !e[0].ExperimentRunning
	})
}

// TestKilledEnvoyFailsItsJob: an envoy killed mid-round misses it
// (offline); with no other envoy to reach the quorum, the job fails at the
// round's deadline, saying why.
func TestKilledEnvoyFailsItsJob(t *testing.T) {
	d := startDirectorAdmin(t, t.TempDir(), fastDirector...)
	shard := makeShard(t, 1, 10)
	e := startEnvoy(t, d, "site-a", shard)
	waitOnline(t, d, "site-a")
	id := submitJob(t, d, trainJob(t, "orphaned", `"min_envoys": 1, "round_timeout": "5s"`, 1, "sleep", "10m"))
	pid := waitPID(t, shard)
	t.Cleanup(func() { syscall.Kill(pid, syscall.SIGKILL) }) // kill -9 leaves the training process behind
	e.Kill()
	eventually(t, 10*time.Second, "site-a to miss the round", func() bool {
		j := showJob(t, d, id)
		return j.Status == "in_progress" && len(j.Envoys) == 1 && j.Envoys[0].Status == "missed"
	})
	r := fladmin(t, d.admin, "wait-job", id, "--wait-timeout", "30s")
	if r.code != 1 || !strings.Contains(r.stdout, "timed out after 5s") || !strings.Contains(r.stdout, "went offline") {
		t.Fatalf("wait-job: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if envoys := listEnvoys(t, d); len(envoys) != 1 || envoys[0].Online {
		t.Fatalf("killed envoy: got %+v, want it offline", envoys)
	}
}

func TestEnvoyRestartListedOnce(t *testing.T) {
	d := startDirectorAdmin(t, t.TempDir(), fastDirector...)
	shard := makeShard(t, 1, 10)
	e := startEnvoy(t, d, "site-a", shard)
	waitOnline(t, d, "site-a")
	if _, err := e.Stop(t, 10*time.Second); err != nil {
		t.Fatalf("envoy exit after SIGTERM: %v", err)
	}
	startEnvoy(t, d, "site-a", shard)
	waitOnline(t, d, "site-a")
	if envoys := listEnvoys(t, d); len(envoys) != 1 {
		t.Fatalf("envoys after restart: got %+v, want one", envoys)
	}
}

func TestDirectorRestartEnvoysReturn(t *testing.T) {
	dataDir := t.TempDir()
	d := startDirectorAdmin(t, dataDir, fastDirector...)
	startEnvoy(t, d, "site-a", makeShard(t, 1, 10))
	startEnvoy(t, d, "site-b", makeShard(t, 2, 10))
	waitOnline(t, d, "site-a", "site-b")
	if took, err := d.proc.Stop(t, 5*time.Second); err != nil {
		t.Fatalf("director exit after SIGTERM with envoys long-polling: %v (after %v)", err, took)
	}
	// Same addresses: the envoys reconnect without being restarted.
	d2 := restartDirector(t, d, fastDirector...)
	waitOnline(t, d2, "site-a", "site-b")
	// And they still take work.
	id := submitJob(t, d2, trainJob(t, "after-restart", `"min_envoys": 2`, 1, "ok", "1m"))
	if r := fladmin(t, d2.admin, "wait-job", id, "--wait-timeout", "60s"); r.code != 0 {
		t.Fatalf("job after a director restart: exit %d, %s %s", r.code, r.stdout, r.stderr)
	}
}

// readRoundModel reads the global model of a round from the director's data dir.
func readRoundModel(tb testing.TB, dataDir, id string, round int) map[string][]float32 {
	tb.Helper()
	return readSafetensorsFile(tb, filepath.Join(dataDir, "experiments", id, "models", fmt.Sprintf("round-%04d.safetensors", round)))
}

// readSafetensorsFile reads every float32 tensor of a safetensors file.
func readSafetensorsFile(tb testing.TB, path string) map[string][]float32 {
	tb.Helper()
	x, f, err := tensor.OpenSafetensors(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	out := map[string][]float32{}
	for _, s := range x.Tensors {
		v, err := x.Float32s(s.Name)
		if err != nil {
			tb.Fatal(err)
		}
		out[s.Name] = v
	}
	return out
}
