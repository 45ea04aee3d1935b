package store

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"testing"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/store/storetest"
)

// TestPruneRounds marks round models pruned: their rows stay, their files
// leave ReferencedFiles (so start-up removes a file a crash left behind
// rather than failing the job for it), a second pruning is a no-op, and the
// newest model is never pruned.
func TestPruneRounds(t *testing.T) {
	storetest.EachBackend(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		clock := newClock()
		db := mustOpen(t, dsn, clock)
		id := "eeeeeeee-0000-4000-8000-000000000001"
		mustRunning(t, db, id, "a")
		for r := 1; r <= 3; r++ {
			if err := db.CompleteRound(ctx, Round{ExperimentID: id, Round: r, ModelPath: fmt.Sprintf("m%d", r), ModelSHA256: "h"}, nil, false); err != nil {
				t.Fatal(err)
			}
		}
		tests := []struct {
			name      string
			prune     []int
			wantFiles []string
			wantErr   error
			wantKept  []string // the model files ReferencedFiles lists
		}{
			{"two old rounds", []int{0, 2}, []string{"m0", "m2"}, nil, []string{"m1", "m3"}},
			{"again: nothing left to remove", []int{0, 2}, nil, nil, []string{"m1", "m3"}},
			{"a round that does not exist", []int{7}, nil, nil, []string{"m1", "m3"}},
			{"the newest round", []int{1, 3}, nil, api.ErrConflict, []string{"m1", "m3"}},
			{"nothing", nil, nil, nil, []string{"m1", "m3"}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				files, err := db.PruneRounds(ctx, id, tt.prune)
				if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
					t.Fatalf("got error %v, want %v", err, tt.wantErr)
				}
				if !reflect.DeepEqual(files, tt.wantFiles) {
					t.Errorf("files to remove: got %q, want %q", files, tt.wantFiles)
				}
				refs, err := db.ReferencedFiles(ctx)
				if err != nil {
					t.Fatal(err)
				}
				var kept []string
				for _, r := range refs {
					if r.Path != "a" { // the archive
						kept = append(kept, r.Path)
					}
				}
				slices.Sort(kept)
				if !reflect.DeepEqual(kept, tt.wantKept) {
					t.Errorf("referenced models: got %q, want %q", kept, tt.wantKept)
				}
			})
		}
		rounds, err := db.Rounds(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		var pruned []int
		for _, r := range rounds {
			if r.Pruned() {
				pruned = append(pruned, r.Round)
				if !r.PrunedAt.Equal(clock.Now()) {
					t.Errorf("round %d pruned at %v, want %v", r.Round, r.PrunedAt, clock.Now())
				}
			}
		}
		if len(rounds) != 4 || !reflect.DeepEqual(pruned, []int{0, 2}) {
			t.Errorf("rounds: got %d rows, pruned %v; want 4 rows, pruned [0 2]", len(rounds), pruned)
		}
	})
}

// TestUnretainedExperiments lists an experiment whose newest round was
// committed after its retention last ran, until PruneRounds records it.
func TestUnretainedExperiments(t *testing.T) {
	storetest.EachBackend(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		db := mustOpen(t, dsn, newClock())
		id := "eeeeeeee-0000-4000-8000-000000000001"
		mustRunning(t, db, id, "a")
		steps := []struct {
			name string
			do   func() error
			want []string
		}{
			{"a new job", func() error { return nil }, nil},
			{"a round committed", func() error {
				return db.CompleteRound(ctx, Round{ExperimentID: id, Round: 1, ModelPath: "m1", ModelSHA256: "h"}, nil, false)
			}, []string{id}},
			{"its retention ran, pruning nothing", func() error { _, err := db.PruneRounds(ctx, id, nil); return err }, nil},
		}
		for _, st := range steps {
			if err := st.do(); err != nil {
				t.Fatalf("%s: %v", st.name, err)
			}
			got, err := db.UnretainedExperiments(ctx)
			if err != nil || !reflect.DeepEqual(got, st.want) {
				t.Fatalf("%s: got %v %v, want %v", st.name, got, err, st.want)
			}
		}
	})
}
