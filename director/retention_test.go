package director

import (
	"maps"
	"slices"
	"testing"

	"github.com/fedplane/fedplane/job"
)

func TestKeptRounds(t *testing.T) {
	tests := []struct {
		name     string
		keep     job.KeepModels
		newest   int
		best     int
		withPrev bool
		want     []int // nil: every round
	}{
		{"default keeps best and newest", "", 5, 2, false, []int{2, 5}},
		{"best", job.KeepBest, 5, 2, false, []int{2, 5}},
		{"best is the newest", job.KeepBest, 5, 5, false, []int{5}},
		{"best before any metric", job.KeepBest, 1, -1, false, []int{1}},
		{"last", job.KeepLast, 5, 2, false, []int{5}},
		{"last with a delta base", job.KeepLast, 5, 2, true, []int{4, 5}},
		{"round 0 has no base", job.KeepLast, 0, -1, true, []int{0}},
		{"all", job.KeepAll, 5, 2, false, nil},
		{"newest 3 and best", "3", 5, 0, false, []int{0, 3, 4, 5}},
		{"newest 3, best among them", "3", 5, 4, false, []int{3, 4, 5}},
		{"more than there are", "10", 2, -1, false, []int{0, 1, 2}},
		{"newest 1 and best", "1", 5, 2, true, []int{2, 4, 5}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := keptRounds(tt.keep, tt.newest, tt.best, tt.withPrev)
			if tt.want == nil {
				if got != nil {
					t.Fatalf("got %v, want every round", slices.Sorted(maps.Keys(got)))
				}
				return
			}
			if rounds := slices.Sorted(maps.Keys(got)); !slices.Equal(rounds, tt.want) {
				t.Fatalf("got %v, want %v", rounds, tt.want)
			}
		})
	}
}
