package e2e

import (
	"encoding/csv"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestFederatedConstants runs three rounds on three envoys whose training
// adds a known per-site constant: the final model must be the start plus
// rounds × the sample-weighted mean of the constants. It also checks the
// metrics table, the results download, and best vs last model.
func TestFederatedConstants(t *testing.T) {
	d := startDirectorAdmin(t, t.TempDir(), fastDirector...)
	sites := []struct {
		name     string
		constant float64
		samples  int
	}{{"site-a", 1, 10}, {"site-b", 2, 20}, {"site-c", 6, 30}}
	for _, s := range sites {
		startEnvoy(t, d, s.name, makeShard(t, s.constant, s.samples))
	}
	waitOnline(t, d, "site-a", "site-b", "site-c")

	dir := trainJob(t, "constants", `"min_envoys": 3`, 3, "ok", "1m")
	// best_metric "round", min: the best model is round 0's, the initial one.
	manifest := `{"name": "constants", "min_envoys": 3, "rounds": 3, "train": {"command": ["python3", "train.py", "ok"], "timeout": "1m"},
		"best_metric": {"name": "round", "mode": "min"}}`
	os.WriteFile(filepath.Join(dir, "job.json"), []byte(manifest), 0o644)
	id := submitJob(t, d, dir)

	follow := fladmin(t, d.admin, "metrics", id, "--follow", "--interval", "200ms")
	// Piped, the table is tab-separated lines and the job's end goes to stderr.
	if follow.code != 0 || !strings.Contains(follow.stdout, "CONSTANT") || !strings.Contains(follow.stderr, "finished") {
		t.Fatalf("metrics --follow: exit %d\n%s\n%s", follow.code, follow.stdout, follow.stderr)
	}
	if r := fladmin(t, d.admin, "wait-job", id, "--wait-timeout", "60s"); r.code != 0 {
		t.Fatalf("wait-job: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	table := mustFladmin(t, d.admin, "metrics", id)
	// (1×10 + 2×20 + 6×30) / 60 = 3.8333 in every round.
	if strings.Count(table, "3.8333") != 3 {
		t.Fatalf("metrics table lacks the weighted mean in each of 3 rounds:\n%s", table)
	}
	if follow.stdout != table {
		t.Fatalf("metrics --follow printed\n%s\nmetrics printed\n%s", follow.stdout, table)
	}

	out := t.TempDir()
	mustFladmin(t, d.admin, "download-job", id, "-d", out)
	res := filepath.Join(out, id)
	for _, f := range []string{"job.json", "status.json", "metrics.csv", "models/last.safetensors", "models/best.safetensors"} {
		if _, err := os.Stat(filepath.Join(res, f)); err != nil {
			t.Fatalf("download lacks %s: %v", f, err)
		}
	}
	mean := (1.0*10 + 2*20 + 6*30) / 60
	start := map[string][]float32{"w": {1, 2, 3, 4}, "b": {0.5}}
	last := readSafetensorsFile(t, filepath.Join(res, "models", "last.safetensors"))
	best := readSafetensorsFile(t, filepath.Join(res, "models", "best.safetensors"))
	for name, vals := range start {
		for i, v := range vals {
			if want := v + float32(3*mean); abs(last[name][i]-want) > 1e-4 {
				t.Fatalf("last %s[%d]: got %v, want start + 3 × %.4f = %v", name, i, last[name][i], mean, want)
			}
			if best[name][i] != v {
				t.Fatalf("best %s[%d]: got %v, want the initial %v", name, i, best[name][i], v)
			}
		}
	}
	f, err := os.Open(filepath.Join(res, "metrics.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(rows[0], ",") != "round,origin,task,name,value,time" {
		t.Fatalf("metrics.csv header: %v", rows[0])
	}
	origins := map[string]int{}
	for _, r := range rows[1:] {
		origins[r[1]]++
	}
	// 3 metrics × 3 rounds from each of 3 envoys, and 3 × 3 aggregated.
	for _, o := range []string{"site-a", "site-b", "site-c", "aggregator"} {
		if origins[o] != 9 {
			t.Fatalf("metrics.csv rows of %s: got %d, want 9 (%v)", o, origins[o], origins)
		}
	}
	if r := fladmin(t, d.admin, "download-job", id, "-d", out); r.code != 1 || !strings.Contains(r.stderr, "already exists") {
		t.Fatalf("second download into the same folder: exit %d %q", r.code, r.stderr)
	}
}
