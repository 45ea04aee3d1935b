package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/store/storetest"
)

// race runs f n times at once, spread over the handles, and returns the
// errors in no particular order.
func race(dbs []*DB, n int, f func(db *DB, i int) error) []error {
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = f(dbs[i%len(dbs)], i) })
	}
	wg.Wait()
	return errs
}

// TestConcurrentWriters has two handles on one database, as two directors
// sharing PostgreSQL have, race on each read-modify-write of the store: in
// every race exactly one wins and the others get the store's own error,
// not a half-applied change or a database error.
func TestConcurrentWriters(t *testing.T) {
	storetest.EachBackend(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		clock := newClock()
		dbs := []*DB{mustOpen(t, dsn, clock), mustOpen(t, dsn, clock)}
		db := dbs[0]
		const n = 8
		tests := []struct {
			name    string
			setup   func(id string)
			f       func(db *DB, id string, i int) error
			wantErr error // of the losers; nil: any error
		}{
			{
				name:  "start",
				setup: func(id string) { mustCreate(t, db, id, "x") },
				f: func(db *DB, id string, i int) error {
					_, err := db.StartExperiment(ctx, id, []string{"a", "b"}, nil)
					return err
				},
				wantErr: api.ErrConflict,
			},
			{
				name:  "end",
				setup: func(id string) { mustRunning(t, db, id, "a") },
				f: func(db *DB, id string, i int) error {
					_, err := db.EndExperiment(ctx, id, api.JobAborted, fmt.Sprint(i))
					return err
				},
				wantErr: api.ErrConflict,
			},
			{
				name:  "report",
				setup: func(id string) { mustRunning(t, db, id, "a") },
				f: func(db *DB, id string, i int) error {
					return db.RecordTaskResult(ctx, TaskResult{ExperimentID: id, Envoy: "a", ResultPath: fmt.Sprint(i)}, nil)
				},
				wantErr: api.ErrAlreadyExists,
			},
			{
				name:  "final round",
				setup: func(id string) { mustRunning(t, db, id, "a") },
				f: func(db *DB, id string, i int) error {
					return db.CompleteRound(ctx, Round{ExperimentID: id, Round: 1, ModelPath: fmt.Sprint(i), ModelSHA256: "h"}, nil, true)
				},
			},
			{
				name:  "delete",
				setup: func(id string) { mustCreate(t, db, id, "x") },
				f: func(db *DB, id string, i int) error {
					return db.DeleteExperiment(ctx, id, api.JobInProgress)
				},
				wantErr: api.ErrNotFound,
			},
		}
		for k, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				id := fmt.Sprintf("cccccccc-0000-4000-8000-%012d", k)
				tt.setup(id)
				errs := race(dbs, n, func(db *DB, i int) error { return tt.f(db, id, i) })
				wins := 0
				for _, err := range errs {
					switch {
					case err == nil:
						wins++
					case tt.wantErr != nil && !errors.Is(err, tt.wantErr):
						t.Errorf("loser: got %v, want %v", err, tt.wantErr)
					}
				}
				if wins != 1 {
					t.Fatalf("%d of %d won, want 1: %v", wins, n, errs)
				}
			})
		}
		// The final round was stored once and finished the experiment.
		id := "cccccccc-0000-4000-8000-000000000003"
		rounds, err := db.Rounds(ctx, id)
		if err != nil || len(rounds) != 2 {
			t.Fatalf("rounds after the race: %+v, %v", rounds, err)
		}
		if e, err := db.GetExperiment(ctx, id); err != nil || e.Status != api.JobFinished {
			t.Fatalf("experiment after the final round: %+v, %v", e, err)
		}
	})
}

// TestConcurrentTouches has two handles flush liveness for the same envoys
// at once, as two directors do when envoys move between them: no deadlock,
// and last_seen ends at the latest time either saw.
func TestConcurrentTouches(t *testing.T) {
	storetest.EachBackend(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		clock := newClock()
		dbs := []*DB{mustOpen(t, dsn, clock), mustOpen(t, dsn, clock)}
		var envoys []Envoy
		for i := range 200 {
			envoys = append(envoys, Envoy{Name: fmt.Sprintf("envoy-%03d", i)})
		}
		if err := dbs[0].UpsertEnvoys(ctx, envoys); err != nil {
			t.Fatal(err)
		}
		base := clock.Now()
		const n = 8
		errs := race(dbs, n, func(db *DB, i int) error {
			seen := map[string]time.Time{}
			for _, e := range envoys {
				seen[e.Name] = base.Add(time.Duration(i+1) * time.Second)
			}
			return db.TouchEnvoys(ctx, seen)
		})
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		list, err := dbs[1].ListEnvoys(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range list {
			if want := base.Add(n * time.Second); !e.LastSeen.Equal(want) {
				t.Fatalf("%s last seen %v, want %v", e.Name, e.LastSeen, want)
			}
		}
	})
}
