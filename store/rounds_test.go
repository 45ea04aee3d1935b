package store

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/store/storetest"
)

func TestRoundLifecycle(t *testing.T) {
	storetest.EachBackend(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		db := mustOpen(t, dsn, newClock())
		id := "eeeeeeee-0000-4000-8000-000000000001"
		mustRunning(t, db, id, "b", "a")
		if _, err := db.StartExperiment(ctx, id, []string{"a"}, nil); !errors.Is(err, api.ErrConflict) {
			t.Fatalf("second start: got %v, want api.ErrConflict", err)
		}
		if err := db.SetEnvoyState(ctx, id, "a", api.EnvoyTraining, 0, ""); err != nil {
			t.Fatal(err)
		}
		res := TaskResult{ExperimentID: id, Round: 0, Envoy: "a", DataSize: 5, ResultPath: "r"}
		metrics := []Metric{{ExperimentID: id, Round: 0, Origin: "a", Task: "train", Name: "acc", Value: 0.5}}
		if err := db.RecordTaskResult(ctx, res, metrics); err != nil {
			t.Fatal(err)
		}
		if err := db.RecordTaskResult(ctx, res, metrics); !errors.Is(err, api.ErrAlreadyExists) {
			t.Fatalf("duplicate report: got %v, want %v", err, api.ErrAlreadyExists)
		}
		got, _ := db.TaskResults(ctx, id, 0)
		if len(got) != 1 || got[0].DataSize != 5 {
			t.Fatalf("task results: %+v", got)
		}
		parts, _ := db.ExperimentEnvoys(ctx, id)
		if len(parts) != 2 || parts[0].Envoy != "a" || parts[0].Status != api.EnvoyReported || parts[1].Status != api.EnvoyAssigned {
			t.Fatalf("participants: %+v", parts)
		}
		agg := []Metric{{ExperimentID: id, Round: 0, Origin: api.OriginAggregator, Task: "train", Name: "acc", Value: 0.5}}
		if err := db.CompleteRound(ctx, Round{ExperimentID: id, Round: 1, ModelPath: "m1", ModelSHA256: "h1", StatePath: "s1", StateSHA256: "sh1"}, agg, true); err != nil {
			t.Fatal(err)
		}
		e, _ := db.GetExperiment(ctx, id)
		if e.Status != api.JobFinished {
			t.Fatalf("after the final round: %s", e.Status)
		}
		if err := db.CompleteRound(ctx, Round{ExperimentID: id, Round: 2, ModelPath: "m2"}, nil, false); !errors.Is(err, api.ErrConflict) {
			t.Fatalf("round after the end: got %v, want api.ErrConflict", err)
		}
		if _, err := db.EndExperiment(ctx, id, api.JobFailed, "late"); !errors.Is(err, api.ErrConflict) {
			t.Fatalf("failing a finished experiment: got %v, want api.ErrConflict", err)
		}
		rounds, _ := db.Rounds(ctx, id)
		ms, _ := db.Metrics(ctx, id)
		if len(rounds) != 2 || len(ms) != 2 {
			t.Fatalf("rounds %d metrics %d, want 2 and 2", len(rounds), len(ms))
		}
		if r := rounds[1]; r.StatePath != "s1" || r.StateSHA256 != "sh1" || rounds[0].StatePath != "" {
			t.Fatalf("server state of the rounds: %+v", rounds)
		}
		parts, _ = db.ExperimentEnvoys(ctx, id)
		for _, p := range parts {
			if p.Status != api.EnvoyFinished {
				t.Fatalf("participant after finish: %+v", p)
			}
		}
		latest, _ := db.LatestAssignments(ctx)
		if latest["a"] != id || latest["b"] != id {
			t.Fatalf("latest assignments: %v", latest)
		}
		// Deleting the experiment removes its rows everywhere (ON DELETE CASCADE).
		if err := db.DeleteExperiment(ctx, id); err != nil {
			t.Fatal(err)
		}
		if r, _ := db.Rounds(ctx, id); len(r) != 0 {
			t.Fatalf("rounds after delete: %d", len(r))
		}
	})
}

func TestEndExperimentMarksParticipants(t *testing.T) {
	storetest.EachBackend(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		db := mustOpen(t, dsn, newClock())
		id := "eeeeeeee-0000-4000-8000-000000000002"
		mustCreate(t, db, id, "x")
		if _, err := db.StartExperiment(ctx, id, []string{"a", "b"}, nil); err != nil {
			t.Fatal(err)
		}
		if err := db.SetEnvoyState(ctx, id, "a", api.EnvoyFailed, 0, "boom"); err != nil {
			t.Fatal(err)
		}
		if _, err := db.EndExperiment(ctx, id, api.JobFailed, "envoy a failed"); err != nil {
			t.Fatal(err)
		}
		parts, _ := db.ExperimentEnvoys(ctx, id)
		if parts[0].Status != api.EnvoyFailed || parts[0].Reason != "boom" || parts[1].Status != api.EnvoyFailed {
			t.Fatalf("participants: %+v", parts)
		}
		if err := db.SetEnvoyState(ctx, id, "b", api.EnvoyTraining, 1, ""); !errors.Is(err, api.ErrConflict) {
			t.Fatalf("state change after the end: got %v, want api.ErrConflict", err)
		}
		if _, err := db.EndExperiment(ctx, id, api.JobPending, ""); err == nil {
			t.Fatal("ending with a non-terminal status succeeded")
		}
	})
}

// mustRunning creates experiment id with its round-0 model and starts it
// on envoys.
func mustRunning(tb testing.TB, db *DB, id string, envoys ...string) {
	tb.Helper()
	ctx := context.Background()
	if _, err := db.CreateExperiment(ctx, Experiment{ID: id, Name: "x", Manifest: "{}", ArchivePath: "a", ArchiveSHA256: "s", ArchiveSize: 1},
		Round{Round: 0, ModelPath: "m0", ModelSHA256: "h0"}); err != nil {
		tb.Fatal(err)
	}
	if _, err := db.StartExperiment(ctx, id, envoys, nil); err != nil {
		tb.Fatal(err)
	}
}

// mustExperiments creates n experiments, every tenth still pending and the
// rest finished, as a director's history looks, and returns their ids.
func mustExperiments(tb testing.TB, db *DB, n int) []string {
	tb.Helper()
	ctx := context.Background()
	var ids []string
	for i := range n {
		id := fmt.Sprintf("eeeeeeee-0000-4000-8000-%012d", i)
		if _, err := db.CreateExperiment(ctx, Experiment{ID: id, Name: fmt.Sprintf("job-%d", i), Manifest: `{"rounds": 3}`, ArchivePath: "a", ArchiveSHA256: "s", ArchiveSize: 1},
			Round{Round: 0, ModelPath: "m0", ModelSHA256: "h0"}); err != nil {
			tb.Fatal(err)
		}
		if i%10 != 0 {
			if _, err := db.StartExperiment(ctx, id, []string{"a"}, nil); err != nil {
				tb.Fatal(err)
			}
			if _, err := db.EndExperiment(ctx, id, api.JobFinished, ""); err != nil {
				tb.Fatal(err)
			}
		}
		ids = append(ids, id)
	}
	return ids
}

// BenchmarkListPending is the scheduler's query, made every half period:
// the pending jobs of a director that has run 1,000.
func BenchmarkListPending(b *testing.B) {
	ctx := context.Background()
	db := mustOpen(b, filepath.Join(b.TempDir(), "f.db"), newClock())
	mustExperiments(b, db, 1000)
	f := ExperimentFilter{Statuses: []api.JobStatus{api.JobPending}, NewestLast: true}
	b.ReportAllocs()
	for b.Loop() {
		pending, err := db.ListExperiments(ctx, f)
		if err != nil || len(pending) != 100 {
			b.Fatalf("got %d pending, %v; want 100", len(pending), err)
		}
	}
}

// BenchmarkGetExperiment is the lookup behind every GetExperimentData and
// every results download.
func BenchmarkGetExperiment(b *testing.B) {
	ctx := context.Background()
	db := mustOpen(b, filepath.Join(b.TempDir(), "f.db"), newClock())
	ids := mustExperiments(b, db, 1000)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := db.GetExperiment(ctx, ids[i%len(ids)]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkRecordTaskResult is one envoy's report of a round with four
// metrics: one write transaction per SendLocalTaskResults.
func BenchmarkRecordTaskResult(b *testing.B) {
	ctx := context.Background()
	db := mustOpen(b, filepath.Join(b.TempDir(), "f.db"), newClock())
	id := "eeeeeeee-0000-4000-8000-000000000001"
	mustRunning(b, db, id, "a")
	b.ReportAllocs()
	round := 0
	for b.Loop() {
		var metrics []Metric
		for _, name := range []string{"loss", "accuracy", "n_samples", "seconds"} {
			metrics = append(metrics, Metric{ExperimentID: id, Round: round, Origin: "a", Task: "train", Name: name, Value: 0.5})
		}
		res := TaskResult{ExperimentID: id, Round: round, Envoy: "a", DataSize: 1000, ResultPath: "r"}
		if err := db.RecordTaskResult(ctx, res, metrics); err != nil {
			b.Fatal(err)
		}
		round++
	}
}

// TestRoundParticipantsRecorded: the first round's sample is recorded at
// the start and a later round's with its model; a round without a sample
// reads back as nil (every participant).
func TestRoundParticipantsRecorded(t *testing.T) {
	storetest.EachBackend(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		db := mustOpen(t, dsn, newClock())
		id := "eeeeeeee-0000-4000-8000-000000000009"
		if _, err := db.CreateExperiment(ctx, Experiment{ID: id, Name: "x", Manifest: "{}", ArchivePath: "a", ArchiveSHA256: "s", ArchiveSize: 1},
			Round{Round: 0, ModelPath: "m0", ModelSHA256: "h0"}); err != nil {
			t.Fatal(err)
		}
		if _, err := db.StartExperiment(ctx, id, []string{"a", "b", "c"}, []string{"c", "a"}); err != nil {
			t.Fatal(err)
		}
		if err := db.CompleteRound(ctx, Round{ExperimentID: id, Round: 1, ModelPath: "m1", ModelSHA256: "h1", Participants: []string{"b"}}, nil, false); err != nil {
			t.Fatal(err)
		}
		if err := db.CompleteRound(ctx, Round{ExperimentID: id, Round: 2, ModelPath: "m2", ModelSHA256: "h2"}, nil, false); err != nil {
			t.Fatal(err)
		}
		rounds, err := db.Rounds(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		want := [][]string{{"c", "a"}, {"b"}, nil}
		for i, r := range rounds {
			if !reflect.DeepEqual(r.Participants, want[i]) {
				t.Fatalf("round %d participants %v, want %v", r.Round, r.Participants, want[i])
			}
		}
	})
}
