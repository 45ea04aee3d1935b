package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// digitsPython is the interpreter the digits example needs: Debian's
// python3-torch and python3-sklearn serve /usr/bin/python3, which need not
// be the first python3 in PATH (a pyenv or a venv may come first).
const digitsPython = "/usr/bin/python3"

// digitsRounds is how many rounds the test runs of the example's job: enough
// for the federated model to be far above chance (0.1 for ten digits), few
// enough to take seconds a round.
const digitsRounds = 3

// digitsMinAccuracy is the test accuracy the federated model must reach in
// digitsRounds rounds; it reaches 0.76, and a federation that did not
// train (models not averaged, not sent back) stays near 0.1.
const digitsMinAccuracy = 0.5

// examplesDir is the repository's examples/ folder; tests run in their
// package's folder, cmd/internal/e2e.
func examplesDir(tb testing.TB) string {
	tb.Helper()
	dir, err := filepath.Abs(filepath.Join("..", "..", "..", "examples"))
	if err != nil {
		tb.Fatal(err)
	}
	return dir
}

// needTorch skips the test unless digitsPython can import torch and
// sklearn. With CI=true it fails instead: .ci/run installs them, so CI runs
// the example rather than skipping it unnoticed.
func needTorch(t *testing.T) {
	t.Helper()
	out, err := exec.Command(digitsPython, "-c", "import torch, sklearn").CombinedOutput()
	if err == nil {
		return
	}
	msg := fmt.Sprintf("examples/digits needs %s with torch and scikit-learn (apt-get install python3-torch python3-sklearn): %v",
		digitsPython, err)
	if out = bytes.TrimSpace(out); len(out) > 0 {
		msg += "\n" + string(out)
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s\nCI=true: .ci/run installs them, so this test must run, not skip", msg)
	}
	t.Skip(msg)
}

// mustPython runs digitsPython with args and returns its output, failing
// the test with the output if it exits non-zero.
func mustPython(tb testing.TB, args ...string) string {
	tb.Helper()
	out, err := exec.Command(digitsPython, args...).CombinedOutput()
	if err != nil {
		tb.Fatalf("%s %s: %v\n%s", digitsPython, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// copyJob copies the regular files of the job folder src into a new temp
// folder with job.json's rounds set to rounds, and returns its path.
func copyJob(tb testing.TB, src string, rounds int) string {
	tb.Helper()
	dst := filepath.Join(tb.TempDir(), "job")
	if err := os.Mkdir(dst, 0o755); err != nil {
		tb.Fatal(err)
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		tb.Fatal(err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue // __pycache__, say
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			tb.Fatal(err)
		}
		if e.Name() == "job.json" {
			var manifest map[string]any
			if err := json.Unmarshal(b, &manifest); err != nil {
				tb.Fatalf("%s/job.json: %v", src, err)
			}
			manifest["rounds"] = rounds
			if b, err = json.Marshal(manifest); err != nil {
				tb.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	return dst
}

// TestDigitsExample runs examples/digits as examples/digits/run.sh does, for
// digitsRounds rounds: shards from make_shards.py, a director and three
// envoys, the example's job, the download, and compare.py, whose federated
// accuracy on the held-out test split must be well above chance.
func TestDigitsExample(t *testing.T) {
	needTorch(t)
	examples := examplesDir(t)
	// The job's command is "python3 train.py", looked up in the envoy's PATH,
	// which the envoys inherit from this process.
	t.Setenv("PATH", filepath.Dir(digitsPython)+string(os.PathListSeparator)+os.Getenv("PATH"))

	shards := t.TempDir()
	mustPython(t, filepath.Join(examples, "digits", "make_shards.py"), "--out", shards)

	d := startDirectorAdmin(t, t.TempDir(), fastDirector...)
	sites := []string{"site-1", "site-2", "site-3"}
	for _, s := range sites {
		startEnvoy(t, d, s, filepath.Join(shards, s))
	}
	waitOnline(t, d, sites...)

	id := submitJob(t, d, copyJob(t, filepath.Join(examples, "digits", "job"), digitsRounds))
	// wait-job bounds the wait itself; the training takes seconds a round.
	wait := start(t, "fladmin", "--addr", d.admin, "wait-job", id, "--wait-timeout", "10m")
	<-wait.Done
	if code := wait.Cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("wait-job: exit %d\n%s\nshow-job: %+v", code, wait.Log, showJob(t, d, id))
	}
	table := mustFladmin(t, d.admin, "metrics", id)
	for _, col := range []string{"ACCURACY", "TRAIN_LOSS", "VAL_LOSS"} {
		if !strings.Contains(table, col) {
			t.Fatalf("metrics table lacks %s:\n%s", col, table)
		}
	}

	out := t.TempDir()
	mustFladmin(t, d.admin, "download-job", id, "-d", out)
	report := filepath.Join(t.TempDir(), "accuracy.json")
	printed := mustPython(t, filepath.Join(examples, "digits", "compare.py"),
		"--shards", shards, "--results", filepath.Join(out, id), "--json", report)
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	var acc struct {
		Federated float64 `json:"federated"`
		Central   float64 `json:"central"`
		Rounds    int     `json:"rounds"`
	}
	if err := json.Unmarshal(b, &acc); err != nil {
		t.Fatalf("compare.py --json wrote %q: %v", b, err)
	}
	t.Logf("compare.py:\n%s", printed)
	if acc.Rounds != digitsRounds {
		t.Fatalf("compare.py read %d rounds from the downloaded job.json, want %d", acc.Rounds, digitsRounds)
	}
	if acc.Federated < digitsMinAccuracy || acc.Central < digitsMinAccuracy {
		t.Fatalf("test accuracy: federated %.4f, central %.4f; want both at least %.2f (chance is 0.1)",
			acc.Federated, acc.Central, digitsMinAccuracy)
	}
}

// TestDigitsHelperIsACopy keeps the digits job's fedplane_train.py the same
// as python/fedplane_train: the job folder carries a copy (what
// docs/training.md recommends) so that sites need not install it.
func TestDigitsHelperIsACopy(t *testing.T) {
	examples := examplesDir(t)
	want, err := os.ReadFile(filepath.Join(examples, "..", "python", "fedplane_train", "__init__.py"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(examples, "digits", "job", "fedplane_train.py"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("examples/digits/job/fedplane_train.py differs from python/fedplane_train/__init__.py: " +
			"cp python/fedplane_train/__init__.py examples/digits/job/fedplane_train.py")
	}
}
