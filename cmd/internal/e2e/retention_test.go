package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestKeepModels runs two 5-round jobs as users do, one with keep_models
// "best" and one with "all": at the end the first holds exactly two model
// files on disk (the best, round 0's by best_metric "round" min, and the
// final one) and download-job still gives both; the second holds all six.
// show-job tells the bytes each holds and its rule.
func TestKeepModels(t *testing.T) {
	d := startDirectorAdmin(t, t.TempDir(), fastDirector...)
	startEnvoy(t, d, "site-a", makeShard(t, 1, 10))
	startEnvoy(t, d, "site-b", makeShard(t, 2, 10))
	waitOnline(t, d, "site-a", "site-b")

	tests := []struct {
		keep, envoy string
		constant    float32 // the envoy's shard adds it each round
		files       []string
		stored      string
	}{
		{`"best"`, "site-a", 1, []string{"round-0000.safetensors", "round-0005.safetensors"}, "2 models"},
		{`"all"`, "site-b", 2, []string{"round-0000.safetensors", "round-0001.safetensors", "round-0002.safetensors",
			"round-0003.safetensors", "round-0004.safetensors", "round-0005.safetensors"}, "6 models"},
	}
	ids := make([]string, len(tests))
	for i, tt := range tests {
		dir := trainJob(t, "keep", `"envoys": ["`+tt.envoy+`"]`, 5, "ok", "1m")
		manifest := `{"name": "keep", "envoys": ["` + tt.envoy + `"], "rounds": 5, "train": {"command": ["python3", "train.py", "ok"], "timeout": "1m"},
			"best_metric": {"name": "round", "mode": "min"}, "keep_models": ` + tt.keep + `}`
		os.WriteFile(filepath.Join(dir, "job.json"), []byte(manifest), 0o644)
		ids[i] = submitJob(t, d, dir)
	}
	for i, tt := range tests {
		t.Run("keep_models="+tt.keep, func(t *testing.T) {
			id := ids[i]
			if r := fladmin(t, d.admin, "wait-job", id, "--wait-timeout", "90s"); r.code != 0 {
				t.Fatalf("wait-job: exit %d: %s %s", r.code, r.stdout, r.stderr)
			}
			entries, err := os.ReadDir(filepath.Join(d.dataDir, "experiments", id, "models"))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, e := range entries {
				got = append(got, e.Name())
			}
			if strings.Join(got, " ") != strings.Join(tt.files, " ") {
				t.Fatalf("models on disk: got %v, want %v", got, tt.files)
			}

			show := mustFladmin(t, d.admin, "show-job", id)
			if !strings.Contains(show, "Stored:") || !strings.Contains(show, tt.stored) || !strings.Contains(show, "keep_models "+tt.keep) {
				t.Fatalf("show-job lacks Stored with %s and keep_models %s:\n%s", tt.stored, tt.keep, show)
			}

			out := t.TempDir()
			mustFladmin(t, d.admin, "download-job", id, "-d", out)
			start := map[string][]float32{"w": {1, 2, 3, 4}, "b": {0.5}}
			best := readSafetensorsFile(t, filepath.Join(out, id, "models", "best.safetensors"))
			last := readSafetensorsFile(t, filepath.Join(out, id, "models", "last.safetensors"))
			for name, vals := range start {
				for i, v := range vals {
					if best[name][i] != v {
						t.Fatalf("best %s[%d]: got %v, want the initial %v", name, i, best[name][i], v)
					}
					if want := v + 5*tt.constant; abs(last[name][i]-want) > 1e-4 {
						t.Fatalf("last %s[%d]: got %v, want start + 5 × %v = %v", name, i, last[name][i], tt.constant, want)
					}
				}
			}
		})
	}
}
