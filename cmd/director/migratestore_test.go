package main

import (
	"context"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/store"
	"github.com/fedplane/fedplane/store/storetest"
)

// mustStore fills a SQLite store as a director leaves it: envoys, a job
// with two rounds, a report and its metrics, events and an audit record.
func mustStore(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	dsn := "sqlite:" + filepath.Join(t.TempDir(), "fedplane.db")
	db, err := store.Open(ctx, dsn, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	id := "aaaaaaaa-0000-4000-8000-000000000001"
	steps := []func() error{
		func() error {
			return db.UpsertEnvoys(ctx, []store.Envoy{{Name: "site-a", NSamples: 3}, {Name: "site-b"}})
		},
		func() error {
			_, err := db.CreateExperiment(ctx, store.Experiment{ID: id, Name: "mnist", Manifest: "{}", ArchivePath: "experiments/a/archive.zip", ArchiveSHA256: "s", ArchiveSize: 1},
				store.Round{Round: 0, ModelPath: "experiments/a/round-0", ModelSHA256: "h0"})
			return err
		},
		func() error { _, err := db.StartExperiment(ctx, id, []string{"site-a", "site-b"}, nil); return err },
		func() error {
			return db.RecordTaskResult(ctx, store.TaskResult{ExperimentID: id, Envoy: "site-a", DataSize: 3, ResultPath: "r"},
				[]store.Metric{{ExperimentID: id, Origin: "site-a", Task: "train", Name: "loss", Value: 0.5}})
		},
		func() error {
			return db.CompleteRound(ctx, store.Round{ExperimentID: id, Round: 1, ModelPath: "experiments/a/round-1", ModelSHA256: "h1"}, nil, true)
		},
		func() error {
			return db.AppendJournal(ctx, []*api.Event{{Kind: api.EventJobSubmitted, Job: id}, {Kind: api.EventJobFinished, Job: id}},
				[]*api.AuditRecord{{Caller: "alice", Channel: api.AuditAdmin, Action: api.CmdListJobs, Outcome: "ok"}})
		},
	}
	for _, step := range steps {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	return dsn
}

func TestMigrateStore(t *testing.T) {
	storetest.EachBackend(t, func(t *testing.T, to string) {
		from := mustStore(t)
		code, out, stderr := runDirector(t, "migrate-store", "--from", from, "--to", to)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		for _, want := range []string{"envoys             2", "experiments        1", "rounds             2", "metrics            1",
			"events             2", "audit              1", "copied 12 rows"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}

		ctx := context.Background()
		read := func(dsn string) []any {
			db, err := store.Open(ctx, dsn, store.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			envoys, err1 := db.ListEnvoys(ctx)
			jobs, err2 := db.ListExperiments(ctx, store.ExperimentFilter{})
			rounds, err3 := db.Rounds(ctx, "aaaaaaaa-0000-4000-8000-000000000001")
			metrics, err4 := db.Metrics(ctx, "aaaaaaaa-0000-4000-8000-000000000001")
			events, err5 := db.Events(ctx, store.EventFilter{})
			audit, err6 := db.Audit(ctx, store.AuditFilter{})
			for _, err := range []error{err1, err2, err3, err4, err5, err6} {
				if err != nil {
					t.Fatal(err)
				}
			}
			return []any{envoys, jobs, rounds, metrics, events, audit}
		}
		if src, dst := read(from), read(to); !reflect.DeepEqual(src, dst) {
			t.Fatalf("the copy differs:\nsource %+v\ncopy   %+v", src, dst)
		}

		// Once more into the same target: refused, it has rows now.
		code, _, stderr = runDirector(t, "migrate-store", "--from", from, "--to", to)
		if code != 1 || !strings.Contains(stderr, "not empty: table envoys has rows") {
			t.Fatalf("second copy: exit %d, %s; want 1 and a refusal", code, stderr)
		}
	})
}

func TestMigrateStoreUsage(t *testing.T) {
	missing := "sqlite:" + filepath.Join(t.TempDir(), "missing.db")
	tests := []struct {
		name     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"no from", []string{"--to", "postgres://h/db"}, 2, "--from is required"},
		{"no to", []string{"--from", "sqlite:a.db"}, 2, "--to is required"},
		{"bare word", []string{"--from", "sqlite:a.db", "--to", "localhost"}, 2, "--to localhost: want postgres://... or sqlite:PATH"},
		{"other scheme", []string{"--from", "mysql://u:secret@h/db", "--to", "sqlite:b.db"}, 2, "--from mysql://u:xxxxx@h/db"},
		{"same", []string{"--from", "sqlite:a.db", "--to", "sqlite:a.db"}, 2, "the same database"},
		{"missing source", []string{"--from", missing, "--to", "sqlite:b.db"}, 1, "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, stderr := runDirector(t, append([]string{"migrate-store"}, tt.args...)...)
			if code != tt.wantCode || !strings.Contains(stderr, tt.wantErr) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, stderr, tt.wantCode, tt.wantErr)
			}
			if strings.Contains(stderr, "secret") {
				t.Fatalf("stderr shows the password: %s", stderr)
			}
		})
	}
}
