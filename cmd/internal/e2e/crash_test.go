package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedplane/fedplane/store"
)

// checkDatabase stops nothing: it opens the director's SQLite file
// read-write after the director was stopped and runs integrity_check.
func checkDatabase(tb testing.TB, dataDir string) {
	tb.Helper()
	db, err := store.Open(context.Background(), filepath.Join(dataDir, "fedplane.db"), store.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	defer db.Close()
	if err := db.IntegrityCheck(context.Background()); err != nil {
		tb.Fatal(err)
	}
}

func TestKillDirectorMidUpload(t *testing.T) {
	d := startDirectorAdmin(t, t.TempDir())
	job := writeJob(t, e2eManifest) // only uploaded: it never runs
	blob := make([]byte, 256<<20)
	for i := range blob {
		blob[i] = byte(i*7 + i/4096) // poorly compressible, cheap to make
	}
	os.WriteFile(filepath.Join(job, "weights.bin"), blob, 0o644)
	up := start(t, "fladmin", "--addr", d.admin, "submit-job", "--no-progress", job)
	// An upload is received into partials/, where a cut one is kept for
	// a resume.
	eventually(t, 60*time.Second, "upload under way", func() bool {
		entries, _ := os.ReadDir(filepath.Join(d.dataDir, "partials"))
		for _, e := range entries {
			if fi, err := e.Info(); err == nil && fi.Size() > 1<<20 {
				return true
			}
		}
		return false
	})
	d.proc.Kill()
	<-up.Done
	if up.Cmd.ProcessState.ExitCode() == 0 {
		t.Fatalf("fladmin reported success for an upload cut off by a kill: %s", up.Log)
	}
	checkDatabase(t, d.dataDir)
	d = restartDirector(t, d)
	if out := mustFladmin(t, d.admin, "list-jobs"); !strings.Contains(out, "No jobs") {
		t.Fatalf("a job exists after an upload cut off by a kill:\n%s", out)
	}
	// A kill leaves no sidecar (it is written when a stream is cut, not
	// when the director dies), so the partial cannot be resumed: start-up
	// removes it.
	for _, sub := range []string{"tmp", "experiments", "partials"} {
		if entries, _ := os.ReadDir(filepath.Join(d.dataDir, sub)); len(entries) != 0 {
			t.Fatalf("%s/ holds %d entries after the restart", sub, len(entries))
		}
	}
}

// roundModelExists reports whether round r's global model was stored.
func roundModelExists(dataDir, id string, r int) bool {
	_, err := os.Stat(filepath.Join(dataDir, "experiments", id, "models", fmt.Sprintf("round-%04d.safetensors", r)))
	return err == nil
}

// trainingRound is the round that the slow training command (testjob.TrainPy)
// reports it is working on in shard, "" while none is.
func trainingRound(shard string) string {
	b, _ := os.ReadFile(filepath.Join(shard, "training"))
	return strings.TrimSpace(string(b))
}

// expectConstants checks the final model of the constants job: the start
// plus rounds × the sample-weighted mean, as an uninterrupted run gives.
func expectConstants(t *testing.T, dataDir, id string, rounds int, mean float64) {
	t.Helper()
	model := readRoundModel(t, dataDir, id, rounds)
	start := map[string][]float32{"w": {1, 2, 3, 4}, "b": {0.5}}
	for name, vals := range start {
		for i, v := range vals {
			if want := v + float32(float64(rounds)*mean); abs(model[name][i]-want) > 1e-4 {
				t.Fatalf("final %s[%d]: got %v, want %v (an uninterrupted run's)", name, i, model[name][i], want)
			}
		}
	}
}

func TestKillDirectorMidRound(t *testing.T) {
	d := startDirectorAdmin(t, t.TempDir(), fastDirector...)
	shardA := makeShard(t, 1, 10)
	startEnvoy(t, d, "site-a", shardA)
	startEnvoy(t, d, "site-b", makeShard(t, 3, 30))
	waitOnline(t, d, "site-a", "site-b")
	id := submitJob(t, d, trainJob(t, "resume", `"min_envoys": 2`, 3, "slow", "1m"))
	eventually(t, 60*time.Second, "round 0 aggregated", func() bool { return roundModelExists(d.dataDir, id, 1) })
	// The slow training writes its round into the shard's "training" mark
	// while it works: kill the director while site-a trains round 1.
	eventually(t, 60*time.Second, "site-a training round 1", func() bool { return trainingRound(shardA) == "1" })
	d.proc.Kill()
	checkDatabase(t, d.dataDir)
	d = restartDirector(t, d, fastDirector...)
	if r := fladmin(t, d.admin, "wait-job", id, "--wait-timeout", "90s"); r.code != 0 {
		t.Fatalf("job after a director kill: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	expectConstants(t, d.dataDir, id, 3, (1.0*10+3*30)/40)
}

func TestKillEnvoyMidRound(t *testing.T) {
	d := startDirectorAdmin(t, t.TempDir(), "--health-check-period", "300ms", "--offline-after", "10s")
	shardA := makeShard(t, 1, 10)
	work := filepath.Join(t.TempDir(), "work")
	a := start(t, "envoy", "start", "--allow-root", "--name", "site-a", "--director", d.grpc, "--shard-dir", shardA, "--work-dir", work, "--kill-grace", "1s")
	startEnvoy(t, d, "site-b", makeShard(t, 3, 30))
	waitOnline(t, d, "site-a", "site-b")
	id := submitJob(t, d, trainJob(t, "rejoin", `"min_envoys": 2`, 2, "slow", "1m"))
	eventually(t, 60*time.Second, "site-a training", func() bool { return trainingRound(shardA) != "" })
	a.Kill()
	start(t, "envoy", "start", "--allow-root", "--name", "site-a", "--director", d.grpc, "--shard-dir", shardA, "--work-dir", work, "--kill-grace", "1s")
	if r := fladmin(t, d.admin, "wait-job", id, "--wait-timeout", "90s"); r.code != 0 {
		t.Fatalf("job after an envoy kill: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	expectConstants(t, d.dataDir, id, 2, (1.0*10+3*30)/40)
}

// TestDiskFullDuringUpload fills the director's disk mid-upload: the upload
// is refused with a clear error, no job or temp file is left, and the
// director keeps serving. It mounts a small tmpfs, which needs root (as CI
// has); elsewhere it is skipped.
func TestDiskFullDuringUpload(t *testing.T) {
	dataDir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", dataDir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs (needs root): %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", "-l", dataDir).Run() }) // runs after the director is stopped
	d := startDirectorAdmin(t, dataDir)
	job := writeJob(t, e2eManifest) // only uploaded: it never runs
	blob := make([]byte, 24<<20)
	rand.NewChaCha8([32]byte{7}).Read(blob) // random: stored, not deflated
	os.WriteFile(filepath.Join(job, "weights.bin"), blob, 0o644)
	r := fladmin(t, d.admin, "submit-job", "--no-progress", job)
	if r.code != 1 || !strings.Contains(r.stderr, "no space left on device") {
		t.Fatalf("upload onto a full disk: exit %d, stderr %q", r.code, r.stderr)
	}
	if out := mustFladmin(t, d.admin, "list-jobs"); !strings.Contains(out, "No jobs") {
		t.Fatalf("a job exists after a failed upload:\n%s", out)
	}
	for _, sub := range []string{"tmp", "experiments"} {
		if entries, _ := os.ReadDir(filepath.Join(dataDir, sub)); len(entries) != 0 {
			t.Fatalf("%s/ holds %d entries after a failed upload", sub, len(entries))
		}
	}
	// Space is back: a small job goes through.
	mustFladmin(t, d.admin, "submit-job", writeJob(t, e2eManifest))
}
