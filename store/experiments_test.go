package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/store/storetest"
)

func mustCreate(tb testing.TB, db *DB, id, name string) Experiment {
	tb.Helper()
	e, err := db.CreateExperiment(context.Background(), Experiment{
		ID: id, Name: name, Submitter: "alice", Manifest: `{"name":"` + name + `"}`,
		ArchivePath: "experiments/" + id + "/archive.zip", ArchiveSHA256: "00", ArchiveSize: 1,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return e
}

func TestExperimentQueries(t *testing.T) {
	storetest.EachBackend(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		clock := newClock()
		db := mustOpen(t, dsn, clock)
		ids := []string{
			"aaaaaaaa-0000-4000-8000-000000000001",
			"aaaaaaaa-0000-4000-8000-000000000002",
			"bbbbbbbb-0000-4000-8000-000000000003",
		}
		for i, id := range ids {
			e := mustCreate(t, db, id, []string{"mnist", "mnist-big", "cifar"}[i])
			if e.Status != api.JobPending || !e.CreatedAt.Equal(clock.Now()) {
				t.Fatalf("created: got %+v", e)
			}
			clock.Add(time.Second)
		}

		finds := []struct {
			prefix  string
			wantID  string
			wantErr error
		}{
			{"bbbbbbbb", ids[2], nil},
			{ids[0], ids[0], nil},
			{"AAAAAAAA-0000-4000-8000-000000000002", ids[1], nil},
			{"aaaaaaaa", "", api.ErrAmbiguous},
			{"cccccccc", "", api.ErrNotFound},
			{"aaaa%", "", api.ErrNotFound},
		}
		for _, tt := range finds {
			t.Run("find "+tt.prefix, func(t *testing.T) {
				e, err := db.FindExperiment(ctx, tt.prefix)
				if !errors.Is(err, tt.wantErr) || e.ID != tt.wantID {
					t.Fatalf("got %q %v, want %q %v", e.ID, err, tt.wantID, tt.wantErr)
				}
			})
		}

		lists := []struct {
			name string
			f    ExperimentFilter
			want []string
		}{
			{"all newest first", ExperimentFilter{}, []string{ids[2], ids[1], ids[0]}},
			{"reverse", ExperimentFilter{NewestLast: true}, []string{ids[0], ids[1], ids[2]}},
			{"name prefix", ExperimentFilter{NamePrefix: "mnist"}, []string{ids[1], ids[0]}},
			{"max", ExperimentFilter{Max: 1}, []string{ids[2]}},
			{"status", ExperimentFilter{Statuses: []api.JobStatus{api.JobFinished}}, nil},
		}
		for _, tt := range lists {
			t.Run("list "+tt.name, func(t *testing.T) {
				got, err := db.ListExperiments(ctx, tt.f)
				if err != nil {
					t.Fatal(err)
				}
				var gotIDs []string
				for _, e := range got {
					gotIDs = append(gotIDs, e.ID)
				}
				if len(gotIDs) != len(tt.want) {
					t.Fatalf("got %v, want %v", gotIDs, tt.want)
				}
				for i := range gotIDs {
					if gotIDs[i] != tt.want[i] {
						t.Fatalf("got %v, want %v", gotIDs, tt.want)
					}
				}
			})
		}
	})
}

func TestExperimentStatusTransitions(t *testing.T) {
	storetest.EachBackend(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		clock := newClock()
		db := mustOpen(t, dsn, clock)
		id := "cccccccc-0000-4000-8000-000000000001"
		mustCreate(t, db, id, "x")

		steps := []struct {
			name    string
			from    []api.JobStatus
			to      api.JobStatus
			wantErr error
		}{
			{"start", []api.JobStatus{api.JobPending}, api.JobInProgress, nil},
			{"not from pending any more", []api.JobStatus{api.JobPending}, api.JobAborted, api.ErrConflict},
			{"fail", []api.JobStatus{api.JobInProgress}, api.JobFailed, nil},
			{"terminal is final", []api.JobStatus{api.JobFailed, api.JobInProgress}, api.JobFinished, api.ErrConflict},
		}
		for _, st := range steps {
			t.Run(st.name, func(t *testing.T) {
				clock.Add(time.Second)
				e, err := db.SetExperimentStatus(ctx, id, st.from, st.to, "because")
				if !errors.Is(err, st.wantErr) {
					t.Fatalf("got %v, want %v", err, st.wantErr)
				}
				if err == nil && (e.Status != st.to || e.Reason != "because") {
					t.Fatalf("got %+v", e)
				}
			})
		}
		e, _ := db.GetExperiment(ctx, id)
		if e.Status != api.JobFailed || e.StartedAt.IsZero() || e.FinishedAt.IsZero() || !e.FinishedAt.After(e.StartedAt) {
			t.Fatalf("final: got %+v", e)
		}
		if _, err := db.SetExperimentStatus(ctx, "nope", []api.JobStatus{api.JobPending}, api.JobAborted, ""); !errors.Is(err, api.ErrNotFound) {
			t.Fatalf("unknown id: got %v, want api.ErrNotFound", err)
		}
		counts, err := db.CountExperiments(ctx)
		if err != nil || counts[api.JobFailed] != 1 {
			t.Fatalf("counts: got %v %v", counts, err)
		}
	})
}

func TestDeleteExperiment(t *testing.T) {
	storetest.EachBackend(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		db := mustOpen(t, dsn, newClock())
		id := "dddddddd-0000-4000-8000-000000000001"
		mustCreate(t, db, id, "x")
		if _, err := db.SetExperimentStatus(ctx, id, []api.JobStatus{api.JobPending}, api.JobInProgress, ""); err != nil {
			t.Fatal(err)
		}
		if err := db.DeleteExperiment(ctx, id, api.JobInProgress); !errors.Is(err, api.ErrConflict) {
			t.Fatalf("delete of running: got %v, want api.ErrConflict", err)
		}
		if _, err := db.SetExperimentStatus(ctx, id, []api.JobStatus{api.JobInProgress}, api.JobAborted, ""); err != nil {
			t.Fatal(err)
		}
		files, _ := db.ReferencedFiles(ctx)
		if len(files) != 1 || files[0].Path != "experiments/"+id+"/archive.zip" || files[0].Status != api.JobAborted {
			t.Fatalf("files: got %+v", files)
		}
		if err := db.DeleteExperiment(ctx, id, api.JobInProgress); err != nil {
			t.Fatal(err)
		}
		if _, err := db.GetExperiment(ctx, id); !errors.Is(err, api.ErrNotFound) {
			t.Fatalf("after delete: got %v, want api.ErrNotFound", err)
		}
		if err := db.DeleteExperiment(ctx, id); !errors.Is(err, api.ErrNotFound) {
			t.Fatalf("second delete: got %v, want api.ErrNotFound", err)
		}
	})
}
