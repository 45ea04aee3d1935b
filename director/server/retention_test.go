package server

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/director"
)

// keptOnDisk returns the rounds whose model files are in job id's models
// folder, and those the store says are not pruned; a test wants them equal.
func keptOnDisk(t *testing.T, f *fed, id string) (files, rows []int) {
	t.Helper()
	entries, _ := os.ReadDir(filepath.Join(f.d.Config().DataDir, experimentsDir, id, "models"))
	for _, e := range entries {
		var r int
		if _, err := fmt.Sscanf(e.Name(), "round-%04d.safetensors", &r); err == nil && !strings.Contains(e.Name(), ".state.") {
			files = append(files, r)
		}
	}
	rounds, err := f.db.Rounds(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rounds {
		if !r.Pruned() {
			rows = append(rows, r.Round)
		}
	}
	return files, rows
}

// TestKeepModels runs a 5-round job under each keep_models rule and checks,
// after every round, which round models are on disk and in the store; then
// what GetTrainedModel and show-job say. Round r reports accuracy accs[r],
// which describes round r's model: the best is round 1's.
func TestKeepModels(t *testing.T) {
	accs := []float32{0.5, 0.9, 0.3, 0.4, 0.2}
	tests := []struct {
		keep string // job.json's value; "" leaves it out
		want [][]int
	}{
		{``, [][]int{{0, 1}, {1, 2}, {1, 3}, {1, 4}, {1, 5}}},
		{`"best"`, [][]int{{0, 1}, {1, 2}, {1, 3}, {1, 4}, {1, 5}}},
		{`"last"`, [][]int{{1}, {2}, {3}, {4}, {5}}},
		{`"all"`, [][]int{{0, 1}, {0, 1, 2}, {0, 1, 2, 3}, {0, 1, 2, 3, 4}, {0, 1, 2, 3, 4, 5}}},
		{`2`, [][]int{{0, 1}, {1, 2}, {1, 2, 3}, {1, 3, 4}, {1, 4, 5}}},
	}
	for _, tt := range tests {
		t.Run("keep_models="+tt.keep, func(t *testing.T) {
			ctx := context.Background()
			f := startFed(t, testCfg(t, newFakeClock()))
			f.register(t, "site-a")
			keep := ""
			if tt.keep != "" {
				keep = `, "keep_models": ` + tt.keep
			}
			id := f.submitJob(t, `{"name": "keep", "envoys": ["site-a"], "rounds": 5, "train": {"command": ["true"]},
				"best_metric": {"name": "accuracy", "mode": "max"}`+keep+`}`)
			f.waitFor(t, "site-a")
			for r, acc := range accs {
				f.trainWithAccuracy(t, "site-a", id, float32(10*(r+1)), 5, acc)
				f.settle(t)
				files, rows := keptOnDisk(t, f, id)
				if !slices.Equal(files, tt.want[r]) || !slices.Equal(rows, tt.want[r]) {
					t.Fatalf("after round %d: models on disk %v, kept in the store %v; want %v", r, files, rows, tt.want[r])
				}
			}

			best, err := f.c.dir.GetTrainedModel(ctx, &directorpb.GetTrainedModelRequest{ExperimentName: id, ModelType: directorpb.GetTrainedModelRequest_BEST_MODEL})
			if tt.keep == `"last"` {
				if status.Code(err) != codes.NotFound || !strings.Contains(err.Error(), "keep_models") {
					t.Fatalf("best model under keep_models last: got %v, want NotFound naming keep_models", err)
				}
			} else if err != nil || len(best.GetModelProto().GetTensors()) == 0 {
				t.Fatalf("best model: %v %v", best, err)
			}
			last, err := f.c.dir.GetTrainedModel(ctx, &directorpb.GetTrainedModelRequest{ExperimentName: id, ModelType: directorpb.GetTrainedModelRequest_LAST_MODEL})
			if err != nil || len(last.GetModelProto().GetTensors()) == 0 {
				t.Fatalf("last model: %v %v", last, err)
			}

			e, _ := f.d.FindJob(ctx, id)
			j, err := f.d.JobDetail(ctx, e)
			if err != nil {
				t.Fatal(err)
			}
			s := j.Storage
			final := tt.want[len(tt.want)-1]
			fi, _ := os.Stat(filepath.Join(f.d.Config().DataDir, experimentsDir, id, "models", "round-0005.safetensors"))
			if s == nil || s.Models != len(final) || s.ModelBytes != int64(len(final))*fi.Size() || s.ArchiveBytes != e.ArchiveSize ||
				s.Bytes != s.ArchiveBytes+s.ModelBytes+s.StateBytes+s.ResultsBytes+s.LogBytes+s.OtherBytes {
				t.Fatalf("show-job storage: got %+v, want %d models of %d bytes and the archive's %d", s, len(final), fi.Size(), e.ArchiveSize)
			}
			if want := strings.Trim(tt.keep, `"`); (want == "" && (s.KeepModels != "best" || !s.KeepIsDefault)) || (want != "" && s.KeepModels != want) {
				t.Errorf("show-job keep_models: got %q (default %v), want %q", s.KeepModels, s.KeepIsDefault, want)
			}
		})
	}
}

// TestKeepModelsAfterACrash plays the two crashes retention can meet: one
// between the commit that marks a model pruned and the file's removal (the
// file is an orphan), and one between a round's commit and its retention
// (the rows say nothing was pruned). A restart removes the one, prunes the
// other, and neither fails the job, which resumes.
func TestKeepModelsAfterACrash(t *testing.T) {
	ctx := context.Background()
	cfg := testCfg(t, newFakeClock())
	f := startFed(t, cfg)
	f.register(t, "site-a")
	id := f.submitJob(t, `{"name": "crash", "envoys": ["site-a"], "rounds": 4, "train": {"command": ["true"]}, "keep_models": "last"}`)
	f.waitFor(t, "site-a")
	f.trainWithAccuracy(t, "site-a", id, 1, 10, 0.5)
	f.settle(t)
	f.trainWithAccuracy(t, "site-a", id, 2, 10, 0.5)
	f.settle(t) // rounds 0 and 1 pruned, round 2 in progress
	models := filepath.Join(cfg.DataDir, experimentsDir, id, "models")
	model2, err := os.ReadFile(filepath.Join(models, "round-0002.safetensors"))
	if err != nil {
		t.Fatal(err)
	}

	// Crash one: round 0 marked pruned, its file never removed.
	orphan := filepath.Join(models, "round-0000.safetensors")
	os.WriteFile(orphan, model2, 0o600)
	// Crash two: round 1's model committed, retention never ran: its row
	// is not pruned and the job's retention lags a round.
	unpruned := filepath.Join(models, "round-0001.safetensors")
	os.WriteFile(unpruned, model2, 0o600)
	f.d.FlushJournal() // the events' writes, which would meet the raw writes below
	raw, err := sql.Open("sqlite", "file:"+filepath.Join(cfg.DataDir, "fedplane.db")+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(`UPDATE rounds SET pruned_at = 0 WHERE experiment_id = ? AND round = 1`, id); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec(`UPDATE experiments SET retained_round = 1 WHERE id = ?`, id); err != nil {
		t.Fatal(err)
	}
	raw.Close()

	d2, err := director.New(ctx, cfg) // the same data dir, as after a restart
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	for _, p := range []string{orphan, unpruned} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s survived the start: %v", p, err)
		}
	}
	if files, rows := keptOnDisk(t, f, id); !slices.Equal(files, []int{2}) || !slices.Equal(rows, []int{2}) {
		t.Errorf("after the restart: models on disk %v, kept in the store %v; want [2]", files, rows)
	}
	e, _ := d2.FindJob(ctx, id)
	if e.Status != api.JobInProgress {
		t.Fatalf("job after the restart: %s %q, want in progress", e.Status, e.Reason)
	}
	if task, err := d2.NextTask(ctx, id, "site-a"); err != nil || !task.Train || task.Round != 2 {
		t.Fatalf("job not resumed at round 2: %+v %v", task, err)
	}
	if err := f.db.IntegrityCheck(ctx); err != nil {
		t.Fatal(err)
	}
}
