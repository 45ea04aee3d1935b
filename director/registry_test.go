package director

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"reflect"
	"runtime"
	"testing"
	"time"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/store"
)

func TestRegistryLiveness(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	cfg := testCfg(t, clock)
	d := mustNew(t, cfg)
	r := d.reg
	offline := 2 * cfg.HealthCheckPeriod

	if _, err := r.heartbeat(ctx, "ghost", false, ""); !errors.Is(err, api.ErrNotFound) {
		t.Fatalf("heartbeat of unknown envoy: got %v, want api.ErrNotFound", err)
	}
	if _, err := r.register(ctx, store.Envoy{Name: "a", NSamples: 5}); err != nil {
		t.Fatal(err)
	}
	registered := clock.Now()

	steps := []struct {
		name        string
		advance     time.Duration
		heartbeat   bool
		running     bool
		wantOnline  bool
		wantRunning bool
		wantSwept   []string
		wantStored  bool // the row's online column after the step
	}{
		{name: "fresh", wantOnline: true, wantStored: true},
		{name: "just before offline", advance: offline - time.Nanosecond, wantOnline: true, wantStored: true},
		{name: "at offline-after", advance: time.Nanosecond, wantOnline: false, wantSwept: []string{"a"}, wantStored: false},
		{name: "swept once only", advance: time.Second, wantOnline: false, wantStored: false},
		{name: "heartbeat brings it back", heartbeat: true, running: true, wantOnline: true, wantRunning: true, wantStored: true},
		{name: "running flag cleared", advance: time.Second, heartbeat: true, wantOnline: true, wantStored: true},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			clock.Add(st.advance)
			if st.heartbeat {
				if _, err := r.heartbeat(ctx, "a", st.running, ""); err != nil {
					t.Fatal(err)
				}
			}
			swept, err := r.sweep(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(swept, st.wantSwept) {
				t.Fatalf("swept: got %v, want %v", swept, st.wantSwept)
			}
			v := r.list()[0]
			if v.Online != st.wantOnline || v.ExperimentRunning != st.wantRunning {
				t.Fatalf("view: got online=%v running=%v, want %v %v", v.Online, v.ExperimentRunning, st.wantOnline, st.wantRunning)
			}
			row, err := d.db.GetEnvoy(ctx, "a")
			if err != nil {
				t.Fatal(err)
			}
			if row.Online != st.wantStored || row.ExperimentRunning != st.wantRunning {
				t.Fatalf("stored status: got online=%v running=%v, want %v %v", row.Online, row.ExperimentRunning, st.wantStored, st.wantRunning)
			}
			if !row.RegisteredAt.Equal(registered) {
				t.Fatalf("registered_at changed: %v", row.RegisteredAt)
			}
		})
	}
}

func TestHeartbeatWritesOnlyInBatches(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	d := mustNew(t, testCfg(t, clock))
	r := d.reg
	if _, err := r.register(ctx, store.Envoy{Name: "a"}); err != nil {
		t.Fatal(err)
	}
	start := clock.Now()
	clock.Add(3 * time.Second)
	if _, err := r.heartbeat(ctx, "a", false, ""); err != nil {
		t.Fatal(err)
	}
	row, _ := d.db.GetEnvoy(ctx, "a")
	if !row.LastSeen.Equal(start) {
		t.Fatalf("a plain heartbeat wrote last_seen at once: got %v, want %v", row.LastSeen, start)
	}
	if err := r.flush(ctx); err != nil {
		t.Fatal(err)
	}
	row, _ = d.db.GetEnvoy(ctx, "a")
	if want := start.Add(3 * time.Second); !row.LastSeen.Equal(want) {
		t.Fatalf("last_seen after flush: got %v, want %v", row.LastSeen, want)
	}
}

func TestRegistrySurvivesRestart(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	cfg := testCfg(t, clock)
	d, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"b", "a"} {
		if _, err := d.reg.register(ctx, store.Envoy{Name: n, NSamples: 7, SampleShape: []string{"28", "28"}}); err != nil {
			t.Fatal(err)
		}
	}
	clock.Add(5 * time.Second)
	if _, err := d.reg.heartbeat(ctx, "b", false, ""); err != nil {
		t.Fatal(err)
	}
	seen := clock.Now()
	// A clean stop flushes liveness; Serve's loop does that on cancel.
	loopCtx, cancel := context.WithCancel(ctx)
	cancel()
	d.reg.run(loopCtx, time.Hour, time.Hour, nil)
	d.Close()

	d = mustNew(t, cfg)
	views := d.reg.list()
	if len(views) != 2 || views[0].Name != "a" || views[1].Name != "b" {
		t.Fatalf("envoys after restart: got %+v", views)
	}
	if !views[1].LastSeen.Equal(seen) || views[1].NSamples != 7 {
		t.Fatalf("b after restart: got %+v, want last seen %v", views[1], seen)
	}
	if !views[0].Online || !views[1].Online {
		t.Fatal("envoys seen within offline-after are not online after restart")
	}
}

func TestConfigValidation(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"tiny period", Config{HealthCheckPeriod: time.Microsecond}},
		{"offline before a period", Config{HealthCheckPeriod: 10 * time.Second, OfflineAfter: time.Second}},
		{"empty dimension", Config{SampleShape: []string{"28", ""}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.DataDir = t.TempDir()
			if _, err := New(context.Background(), tt.cfg); !errors.Is(err, api.ErrInvalid) {
				t.Fatalf("got %v, want api.ErrInvalid", err)
			}
		})
	}
}

// TestListingDoesNotWaitOnTheDisk holds SQLite's write lock from another
// connection while a heartbeat writes a status change (the envoy comes
// back online): listings and counts must answer while that write waits,
// so the heartbeat must still be waiting when they return.
func TestListingDoesNotWaitOnTheDisk(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	cfg := testCfg(t, clock)
	d := mustNew(t, cfg)
	r := d.reg
	if _, err := r.register(ctx, store.Envoy{Name: "a"}); err != nil {
		t.Fatal(err)
	}
	clock.Add(d.cfg.OfflineAfter + time.Second)
	r.loaded = time.Time{} // past the start-up grace
	if gone, err := r.sweep(ctx); err != nil || len(gone) != 1 {
		t.Fatalf("sweep: got %v, %v; want a gone", gone, err)
	}
	d.FlushJournal() // the offline event's write, which would meet the lock

	raw, err := sql.Open("sqlite", filepath.Join(cfg.DataDir, dbFile))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	conn, err := raw.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := r.heartbeat(ctx, "a", false, ""); done <- err }()
	// The heartbeat has reached its write once its liveness is in memory.
	for {
		if views := r.list(); len(views) == 1 && views[0].Online {
			break
		}
		runtime.Gosched()
	}
	r.list()
	r.count()
	select {
	case err := <-done:
		t.Fatalf("the heartbeat's write finished while another connection held the write lock (%v): the listing waited for it", err)
	default:
	}
	if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("heartbeat after the lock was released: %v", err)
	}
	if row, _ := d.db.GetEnvoy(ctx, "a"); !row.Online {
		t.Fatal("the envoy's row is not back online")
	}
}
