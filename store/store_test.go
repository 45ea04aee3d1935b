package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"testing/fstest"

	"time"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/migrations"
	"github.com/fedplane/fedplane/store/storetest"
)

// fakeClock is a settable clock for tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

// mustOpen opens the database dsn names (a path, sqlite:PATH or a
// PostgreSQL URL).
func mustOpen(tb testing.TB, dsn string, clock *fakeClock) *DB {
	tb.Helper()
	db, err := Open(context.Background(), dsn, Options{Now: clock.Now})
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}

func TestOpenAppliesMigrations(t *testing.T) {
	storetest.EachBackend(t, func(t *testing.T, dsn string) {
		db := mustOpen(t, dsn, newClock())
		if want := path.Base(t.Name()); db.Backend() != want {
			t.Fatalf("backend: got %q, want %q", db.Backend(), want)
		}
		v, err := db.SchemaVersion(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		ms, _ := loadMigrations(db.migrationFS())
		if want := ms[len(ms)-1].version; v != want {
			t.Fatalf("schema version: got %d, want %d", v, want)
		}
		if err := db.IntegrityCheck(context.Background()); err != nil {
			t.Fatal(err)
		}
		// Opening a migrated database again applies nothing.
		db2 := mustOpen(t, dsn, newClock())
		if v2, err := db2.SchemaVersion(context.Background()); err != nil || v2 != v {
			t.Fatalf("schema version after reopen: got %d (%v), want %d", v2, err, v)
		}
	})
}

func TestSQLitePragmas(t *testing.T) {
	db := mustOpen(t, filepath.Join(t.TempDir(), "f.db"), newClock())
	var mode string
	if err := db.r.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil || mode != "wal" {
		t.Fatalf("journal_mode: got %q (%v), want wal", mode, err)
	}
	var fk int
	if err := db.r.QueryRow("PRAGMA foreign_keys").Scan(&fk); err != nil || fk != 1 {
		t.Fatalf("foreign_keys: got %d (%v), want 1", fk, err)
	}
}

func TestReaderPoolIsReadOnly(t *testing.T) {
	db := mustOpen(t, filepath.Join(t.TempDir(), "f.db"), newClock())
	if _, err := db.r.Exec(`DELETE FROM envoys`); err == nil {
		t.Fatal("write through the reader pool succeeded; want query_only refusal")
	}
}

func TestSchemaTooNew(t *testing.T) {
	storetest.EachBackend(t, func(t *testing.T, dsn string) {
		clock := newClock()
		db := mustOpen(t, dsn, clock)
		ms, _ := loadMigrations(db.migrationFS())
		future := append(ms, migration{version: ms[len(ms)-1].version + 1, name: "future", sql: "CREATE TABLE future (x INTEGER)"})
		if err := db.applyMigrations(context.Background(), future); err != nil {
			t.Fatal(err)
		}
		db.Close()
		_, err := Open(context.Background(), dsn, Options{Now: clock.Now})
		if !errors.Is(err, ErrSchemaTooNew) {
			t.Fatalf("Open of a newer database: got %v, want ErrSchemaTooNew", err)
		}
	})
}

func TestLoadMigrationsRefusesBadNames(t *testing.T) {
	tests := []struct {
		name  string
		files fstest.MapFS
	}{
		{"no number", fstest.MapFS{"envoys.sql": {Data: []byte("")}}},
		{"no name", fstest.MapFS{"0001.sql": {Data: []byte("")}}},
		{"zero", fstest.MapFS{"0000_x.sql": {Data: []byte("")}}},
		{"duplicate", fstest.MapFS{"0001_a.sql": {Data: []byte("")}, "1_b.sql": {Data: []byte("")}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := loadMigrations(tt.files); err == nil {
				t.Fatal("got nil error, want refusal")
			}
		})
	}
}

func TestFailedMigrationRollsBack(t *testing.T) {
	storetest.EachBackend(t, func(t *testing.T, dsn string) {
		db := mustOpen(t, dsn, newClock())
		ctx := context.Background()
		before, _ := db.SchemaVersion(ctx)
		ms, _ := loadMigrations(db.migrationFS())
		bad := append(ms, migration{version: before + 1, name: "bad", sql: "CREATE TABLE half (x INTEGER); SELECT * FROM missing_table"})
		if err := db.applyMigrations(ctx, bad); err == nil {
			t.Fatal("broken migration applied without error")
		}
		after, _ := db.SchemaVersion(ctx)
		if after != before {
			t.Fatalf("schema version after failed migration: got %d, want %d", after, before)
		}
		var n int
		if err := db.r.QueryRowContext(ctx, `SELECT COUNT(*) FROM half`).Scan(&n); err == nil {
			t.Fatal("table of the failed migration exists: migration was not one transaction")
		}
	})
}

func TestEnvoyLifecycle(t *testing.T) {
	storetest.EachBackend(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		clock := newClock()
		db := mustOpen(t, dsn, clock)

		first := clock.Now()
		e, err := db.UpsertEnvoy(ctx, Envoy{Name: "site-b", Description: "b", NSamples: 10, SampleShape: []string{"4"}, TargetShape: []string{"1"}})
		if err != nil {
			t.Fatal(err)
		}
		if !e.RegisteredAt.Equal(first) || !e.LastSeen.Equal(first) || !e.Online {
			t.Fatalf("after register: got %+v", e)
		}
		if _, err := db.UpsertEnvoy(ctx, Envoy{Name: "site-a"}); err != nil {
			t.Fatal(err)
		}

		clock.Add(time.Minute)
		e, err = db.UpsertEnvoy(ctx, Envoy{Name: "site-b", Description: "b2", NSamples: 20, SampleShape: []string{"4"}, TargetShape: []string{"1"}})
		if err != nil {
			t.Fatal(err)
		}
		if !e.RegisteredAt.Equal(first) {
			t.Fatalf("re-registration changed registered_at: got %v, want %v", e.RegisteredAt, first)
		}
		if e.NSamples != 20 || e.Description != "b2" || !e.UpdatedAt.Equal(clock.Now()) {
			t.Fatalf("re-registration did not update shard info: %+v", e)
		}

		later := clock.Now().Add(time.Hour)
		if err := db.TouchEnvoys(ctx, map[string]time.Time{"site-a": later, "gone": later}); err != nil {
			t.Fatal(err)
		}
		// An older time never moves last_seen backwards.
		if err := db.TouchEnvoys(ctx, map[string]time.Time{"site-a": first}); err != nil {
			t.Fatal(err)
		}
		a, err := db.GetEnvoy(ctx, "site-a")
		if err != nil {
			t.Fatal(err)
		}
		if !a.LastSeen.Equal(later) {
			t.Fatalf("last_seen after touch: got %v, want %v", a.LastSeen, later)
		}

		if err := db.SetEnvoyStatus(ctx, EnvoyStatus{Name: "site-a", Online: false, ExperimentRunning: true}); err != nil {
			t.Fatal(err)
		}
		if err := db.SetEnvoyStatus(ctx, EnvoyStatus{Name: "nobody"}); !errors.Is(err, api.ErrNotFound) {
			t.Fatalf("status of unknown envoy: got %v, want api.ErrNotFound", err)
		}
		if _, err := db.GetEnvoy(ctx, "nobody"); !errors.Is(err, api.ErrNotFound) {
			t.Fatalf("get unknown envoy: got %v, want api.ErrNotFound", err)
		}

		// Everything survives a reopen.
		db.Close()
		db = mustOpen(t, dsn, clock)
		list, err := db.ListEnvoys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range list {
			names = append(names, e.Name)
		}
		if want := []string{"site-a", "site-b"}; !reflect.DeepEqual(names, want) {
			t.Fatalf("envoys after reopen: got %v, want %v", names, want)
		}
		if a := list[0]; a.Online || !a.ExperimentRunning || !a.LastSeen.Equal(later) {
			t.Fatalf("site-a after reopen: got %+v", a)
		}
		if b := list[1]; !reflect.DeepEqual(b.SampleShape, []string{"4"}) || b.NSamples != 20 {
			t.Fatalf("site-b after reopen: got %+v", b)
		}
	})
}

func TestOpenRejectsBadPath(t *testing.T) {
	for _, p := range []string{"", "a?b.db", "x#y"} {
		if _, err := Open(context.Background(), p, Options{}); err == nil {
			t.Errorf("Open(%q): got nil error", p)
		}
	}
}

// BenchmarkTouchEnvoys is one liveness flush of a director with 10,000
// registered envoys heartbeating every 10 s and flushing every 5 s: half of
// them have a newer last_seen.
func BenchmarkTouchEnvoys(b *testing.B) {
	benchTouchEnvoys(b, filepath.Join(b.TempDir(), "f.db"))
}

// BenchmarkTouchEnvoysPostgres is BenchmarkTouchEnvoys on PostgreSQL
// (FEDPLANE_TEST_POSTGRES).
func BenchmarkTouchEnvoysPostgres(b *testing.B) {
	benchTouchEnvoys(b, storetest.Postgres(b))
}

func benchTouchEnvoys(b *testing.B, dsn string) {
	ctx := context.Background()
	db := mustOpen(b, dsn, newClock())
	var names []string
	for i := range 10_000 {
		name := fmt.Sprintf("envoy-%05d", i)
		if _, err := db.UpsertEnvoy(ctx, Envoy{Name: name}); err != nil {
			b.Fatal(err)
		}
		names = append(names, name)
	}
	t := time.Now()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		b.StopTimer()
		seen := make(map[string]time.Time, len(names)/2)
		for _, name := range names[:len(names)/2] {
			t = t.Add(time.Microsecond)
			seen[name] = t
		}
		b.StartTimer()
		if err := db.TouchEnvoys(ctx, seen); err != nil {
			b.Fatal(err)
		}
	}
}

// TestMigrationsMirror keeps PostgreSQL's migrations one for one with
// SQLite's: the same numbers and names.
func TestMigrationsMirror(t *testing.T) {
	lite, err := loadMigrations(migrations.FS)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := fs.Sub(migrations.Postgres, "postgres")
	if err != nil {
		t.Fatal(err)
	}
	pg, err := loadMigrations(sub)
	if err != nil {
		t.Fatal(err)
	}
	name := func(ms []migration) []string {
		var out []string
		for _, m := range ms {
			out = append(out, fmt.Sprintf("%04d_%s", m.version, m.name))
		}
		return out
	}
	if got, want := name(pg), name(lite); !reflect.DeepEqual(got, want) {
		t.Fatalf("postgres migrations %v, want SQLite's %v", got, want)
	}
}
