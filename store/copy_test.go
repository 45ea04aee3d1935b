package store

import (
	"context"
	"errors"
	"maps"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/store/storetest"
)

// mustFill gives db a little of everything the store keeps.
func mustFill(tb testing.TB, db *DB, clock *fakeClock) {
	tb.Helper()
	ctx := context.Background()
	if err := db.UpsertEnvoys(ctx, []Envoy{
		{Name: "site-a", Description: "a", NSamples: 10, SampleShape: []string{"28", "28"}, TargetShape: []string{"1"}, Devices: `[{"gpu":0}]`},
		{Name: "site-b", ExperimentRunning: true},
	}); err != nil {
		tb.Fatal(err)
	}
	if err := db.SetEnvoyStatus(ctx, EnvoyStatus{Name: "site-b", Online: false, ExperimentRunning: true, LastSeen: clock.Now()}); err != nil {
		tb.Fatal(err)
	}
	signed := "aaaaaaaa-0000-4000-8000-000000000001"
	if _, err := db.CreateExperiment(ctx, Experiment{ID: signed, Name: "mnist", Submitter: "alice", Manifest: `{"rounds":2}`,
		ArchivePath: "a", ArchiveSHA256: "s", ArchiveSize: 1, FolderName: "f", Signature: []byte("\x00sig\xff")},
		Round{Round: 0, ModelPath: "m0", ModelSHA256: "h0"}); err != nil {
		tb.Fatal(err)
	}
	clock.Add(time.Second)
	if _, err := db.StartExperiment(ctx, signed, []string{"site-a", "site-b"}, []string{"site-a"}); err != nil {
		tb.Fatal(err)
	}
	if err := db.RecordTaskResult(ctx, TaskResult{ExperimentID: signed, Round: 0, Envoy: "site-a", DataSize: 10, ResultPath: "r"},
		[]Metric{{ExperimentID: signed, Round: 0, Origin: "site-a", Task: "train", Name: "loss", Value: 0.25}}); err != nil {
		tb.Fatal(err)
	}
	if err := db.CompleteRound(ctx, Round{ExperimentID: signed, Round: 1, ModelPath: "m1", ModelSHA256: "h1", StatePath: "s1", StateSHA256: "sh1", Participants: []string{"site-b"}},
		[]Metric{{ExperimentID: signed, Round: 0, Origin: "aggregator", Task: "aggregate", Name: "acc", Value: 0.5}}, false); err != nil {
		tb.Fatal(err)
	}
	if _, err := db.PruneRounds(ctx, signed, []int{0}); err != nil {
		tb.Fatal(err)
	}
	mustCreate(tb, db, "bbbbbbbb-0000-4000-8000-000000000002", "pending")
	if err := db.AppendJournal(ctx,
		[]*api.Event{{Kind: api.EventJobSubmitted, Job: signed, JobName: "mnist"}, {Kind: api.EventJobRound, Job: signed, Round: 1, Metrics: map[string]float64{"acc": 0.5}}},
		[]*api.AuditRecord{{Caller: "alice", Channel: api.AuditAdmin, Action: api.CmdListJobs, Outcome: "ok"}}); err != nil {
		tb.Fatal(err)
	}
	if held, _, err := db.AcquireLease(ctx, "scheduler", "director-1", time.Minute); err != nil || !held {
		tb.Fatalf("lease: %v %v", held, err)
	}
}

// snapshot is everything a DB holds, read through its API.
type snapshot struct {
	Envoys      []Envoy
	Experiments []Experiment
	Signature   []byte
	Parts       map[string][]ExperimentEnvoy
	Rounds      map[string][]Round
	Results     []TaskResult
	Metrics     []Metric
	Events      []api.Event
	Audit       []api.AuditRecord
}

func mustSnapshot(tb testing.TB, db *DB) snapshot {
	tb.Helper()
	ctx := context.Background()
	var s snapshot
	var err error
	check := func(e error) {
		if e != nil {
			tb.Helper()
			tb.Fatal(e)
		}
	}
	s.Envoys, err = db.ListEnvoys(ctx)
	check(err)
	s.Experiments, err = db.ListExperiments(ctx, ExperimentFilter{})
	check(err)
	s.Parts, s.Rounds = map[string][]ExperimentEnvoy{}, map[string][]Round{}
	for _, e := range s.Experiments {
		s.Parts[e.ID], err = db.ExperimentEnvoys(ctx, e.ID)
		check(err)
		s.Rounds[e.ID], err = db.Rounds(ctx, e.ID)
		check(err)
	}
	id := "aaaaaaaa-0000-4000-8000-000000000001"
	s.Signature, err = db.JobSignature(ctx, id)
	check(err)
	s.Results, err = db.TaskResults(ctx, id, 0)
	check(err)
	s.Metrics, err = db.Metrics(ctx, id)
	check(err)
	s.Events, err = db.Events(ctx, EventFilter{})
	check(err)
	s.Audit, err = db.Audit(ctx, AuditFilter{})
	check(err)
	return s
}

// TestCopy copies a SQLite store into an empty one of each backend and
// reads it back equal; the copy's numbering carries on past the copied
// rows, and a target with rows is refused.
func TestCopy(t *testing.T) {
	storetest.EachBackend(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		clock := newClock()
		src := mustOpen(t, "sqlite:"+filepath.Join(t.TempDir(), "src.db"), clock)
		mustFill(t, src, clock)
		dst := mustOpen(t, dsn, clock)

		counts, err := Copy(ctx, dst, src)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]int64{"envoys": 2, "experiments": 2, "experiment_envoys": 2, "rounds": 2, "task_results": 1,
			"metrics": 2, "events": 2, "audit": 1, "leases": 1}
		got := map[string]int64{}
		for _, c := range counts {
			got[c.Table] = c.Rows
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("counts: got %v, want %v", got, want)
		}
		if s, d := mustSnapshot(t, src), mustSnapshot(t, dst); !reflect.DeepEqual(s, d) {
			t.Fatalf("copy differs:\nsource %+v\ncopy   %+v", s, d)
		}
		// The lease is still director-1's, with its epoch.
		if held, _, _ := dst.AcquireLease(ctx, "scheduler", "director-2", time.Minute); held {
			t.Fatal("copied lease taken by another holder")
		}
		if held, epoch, _ := dst.AcquireLease(ctx, "scheduler", "director-1", time.Minute); !held || epoch != 1 {
			t.Fatalf("copied lease: held %v epoch %d, want true 1", held, epoch)
		}

		// New rows number on from the copied ones.
		ev := &api.Event{Kind: api.EventEnvoyRegistered, Envoy: "site-c"}
		au := &api.AuditRecord{Caller: "bob", Channel: api.AuditAdmin, Action: api.CmdListJobs, Outcome: "ok"}
		if err := dst.AppendJournal(ctx, []*api.Event{ev}, []*api.AuditRecord{au}); err != nil {
			t.Fatal(err)
		}
		if ev.Seq != 3 || au.Seq != 2 {
			t.Fatalf("after the copy: event seq %d, audit seq %d, want 3 and 2", ev.Seq, au.Seq)
		}
		id := "aaaaaaaa-0000-4000-8000-000000000001"
		if err := dst.RecordMetrics(ctx, id, []Metric{{ExperimentID: id, Round: 1, Origin: "site-a", Task: "validate", Name: "acc", Value: 0.75}}); err != nil {
			t.Fatal(err)
		}
		if ms, err := dst.MetricsAfter(ctx, id, 2); err != nil || len(ms) != 1 || ms[0].Seq != 3 {
			t.Fatalf("metrics after the copied ones: %+v, %v", ms, err)
		}

		// The target has rows now: a second copy is refused, and changes nothing.
		if _, err := Copy(ctx, dst, src); !errors.Is(err, ErrNotEmpty) {
			t.Fatalf("copy into a database with rows: got %v, want ErrNotEmpty", err)
		}
		if evs, _ := dst.Events(ctx, EventFilter{}); len(evs) != 3 {
			t.Fatalf("events after a refused copy: %d, want 3", len(evs))
		}
	})
}

// TestCopyTablesCoverSchema keeps copyTables whole: every table of the
// schema (but schema_migrations, which each database has of its own) with
// every column, on both backends.
func TestCopyTablesCoverSchema(t *testing.T) {
	storetest.EachBackend(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		db := mustOpen(t, dsn, newClock())
		q := `SELECT m.name, c.name FROM sqlite_master m, pragma_table_info(m.name) c
			WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%'`
		if db.Backend() == BackendPostgres {
			q = `SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = current_schema()`
		}
		rows, err := db.r.QueryContext(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		schema := map[string][]string{}
		for rows.Next() {
			var table, col string
			if err := rows.Scan(&table, &col); err != nil {
				t.Fatal(err)
			}
			if table != "schema_migrations" {
				schema[table] = append(schema[table], col)
			}
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		listed := map[string][]string{}
		for _, c := range copyTables {
			for col := range strings.SplitSeq(c.columns, ",") {
				listed[c.name] = append(listed[c.name], strings.TrimSpace(col))
			}
		}
		for table, cols := range schema {
			slices.Sort(cols)
			l := slices.Sorted(slices.Values(listed[table]))
			if table == "metrics" && db.Backend() == BackendSQLite {
				l = slices.DeleteFunc(l, func(c string) bool { return c == "rowid" }) // SQLite's hidden column
			}
			if !reflect.DeepEqual(cols, l) {
				t.Errorf("table %s: columns %v, copyTables lists %v", table, cols, l)
			}
		}
		if len(schema) != len(listed) {
			t.Errorf("schema has tables %v, copyTables %d", slices.Sorted(maps.Keys(schema)), len(listed))
		}
	})
}
