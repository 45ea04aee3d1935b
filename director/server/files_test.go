package server

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/director"
)

// TestReconcileAfterACrash plays the states a kill -9 can leave: a round
// model renamed into place whose row never committed, a temp file, and a
// running job whose archive vanished.
func TestReconcileAfterACrash(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	cfg := testCfg(t, clock)
	f := startFed(t, cfg)
	f.register(t, "site-a", "site-b")
	keep := f.submitJob(t, `{"name": "keep", "envoys": ["site-a"], "rounds": 2, "train": {"command": ["true"]}}`)
	lose := f.submitJob(t, `{"name": "lose", "envoys": ["site-b"], "rounds": 2, "train": {"command": ["true"]}}`)
	f.waitFor(t, "site-a")
	f.waitFor(t, "site-b")
	f.trainWithAccuracy(t, "site-a", keep, 1, 10, 0.5)
	f.settle(t) // round 0 aggregated: round-0001 model stored

	orphan := filepath.Join(cfg.DataDir, experimentsDir, keep, "models", "round-0002.safetensors")
	os.WriteFile(orphan, []byte("renamed, row never committed"), 0o600)
	stray := filepath.Join(cfg.DataDir, experimentsDir, keep, "results", "round-0001", "site-a.taskresults")
	os.MkdirAll(filepath.Dir(stray), 0o700)
	os.WriteFile(stray, []byte("renamed, row never committed"), 0o600)
	os.WriteFile(filepath.Join(cfg.DataDir, tmpDir, "upload-1.zip"), []byte("half"), 0o600)
	loseArchive, _ := f.db.GetExperiment(ctx, lose)
	os.Remove(filepath.Join(cfg.DataDir, loseArchive.ArchivePath))

	d2, err := director.New(ctx, cfg) // the same data dir, as after a restart
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	for _, p := range []string{orphan, stray, filepath.Join(cfg.DataDir, tmpDir)} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Fatalf("%s survived the start: %v", p, err)
		}
	}
	e, _ := d2.FindJob(ctx, lose)
	if e.Status != api.JobFailed || e.Reason == "" {
		t.Fatalf("job whose archive vanished: got %s %q, want failed with the reason", e.Status, e.Reason)
	}
	e, _ = d2.FindJob(ctx, keep)
	if e.Status != api.JobInProgress {
		t.Fatalf("intact job after the restart: %s %q", e.Status, e.Reason)
	}
	if task, err := d2.NextTask(ctx, keep, "site-a"); err != nil || !task.Train || task.Round != 1 {
		t.Fatalf("intact job not resumed at round 1: %+v %v", task, err)
	}
	if err := f.db.IntegrityCheck(ctx); err != nil {
		t.Fatal(err)
	}
}
