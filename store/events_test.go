package store

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/store/storetest"
)

func TestEventsAppendFilterPrune(t *testing.T) {
	storetest.EachBackend(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		clock := newClock()
		db := mustOpen(t, dsn, clock)
		batch := []*api.Event{
			{Kind: api.EventEnvoyRegistered, Envoy: "site-a"},
			{Kind: api.EventJobSubmitted, Job: "j1", JobName: "mnist"},
			{Kind: api.EventJobRound, Job: "j1", Round: 1, Metrics: map[string]float64{"train/loss": 0.5}},
			{Kind: api.EventJobSubmitted, Job: "j2"},
		}
		if err := db.AppendJournal(ctx, batch, nil); err != nil {
			t.Fatal(err)
		}
		for i, e := range batch {
			if e.Seq != int64(i+1) || !e.Time.Equal(clock.Now()) {
				t.Fatalf("event %d: seq %d time %v", i, e.Seq, e.Time)
			}
		}
		tests := []struct {
			name string
			f    EventFilter
			want []int64
		}{
			{"all", EventFilter{}, []int64{1, 2, 3, 4}},
			{"after", EventFilter{After: 2}, []int64{3, 4}},
			{"job", EventFilter{Job: "j1"}, []int64{2, 3}},
			{"job after", EventFilter{Job: "j1", After: 2}, []int64{3}},
			{"max", EventFilter{Max: 2}, []int64{1, 2}},
			{"none", EventFilter{After: 4}, nil},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				got, err := db.Events(ctx, tt.f)
				if err != nil {
					t.Fatal(err)
				}
				var seqs []int64
				for _, e := range got {
					seqs = append(seqs, e.Seq)
				}
				if len(seqs) != len(tt.want) {
					t.Fatalf("seqs %v, want %v", seqs, tt.want)
				}
				for i := range seqs {
					if seqs[i] != tt.want[i] {
						t.Fatalf("seqs %v, want %v", seqs, tt.want)
					}
				}
			})
		}
		got, _ := db.Events(ctx, EventFilter{After: 2, Max: 1})
		if got[0].Metrics["train/loss"] != 0.5 || got[0].Round != 1 || got[0].Kind != api.EventJobRound {
			t.Fatalf("round event read back as %+v", got[0])
		}

		n, err := db.PruneEvents(ctx, 2)
		if err != nil || n != 2 {
			t.Fatalf("prune: %d, %v", n, err)
		}
		if err := db.AppendJournal(ctx, []*api.Event{{Kind: api.EventJobStarted, Job: "j2"}}, nil); err != nil {
			t.Fatal(err)
		}
		all, _ := db.Events(ctx, EventFilter{})
		if len(all) != 3 || all[0].Seq != 3 || all[2].Seq != 5 {
			t.Fatalf("after prune: %+v (sequence numbers must never be reused)", all)
		}
		if last, err := db.LastEventSeq(ctx); err != nil || last != 5 {
			t.Fatalf("last seq %d, %v", last, err)
		}
	})
}

func TestAuditIsAppendOnly(t *testing.T) {
	storetest.EachBackend(t, func(t *testing.T, dsn string) {
		ctx := context.Background()
		clock := newClock()
		db := mustOpen(t, dsn, clock)
		recs := []*api.AuditRecord{
			{Caller: "alice", Role: "project_admin", Channel: api.AuditAdmin, Action: api.CmdListJobs, Outcome: "ok"},
			{Caller: "bob", Role: "member", Channel: api.AuditAdmin, Action: api.CmdAbortJob, Target: "j1", Outcome: "NOT_AUTHORIZED", Detail: "members may only view"},
		}
		if err := db.AppendJournal(ctx, nil, recs[:1]); err != nil {
			t.Fatal(err)
		}
		clock.Add(time.Hour)
		if err := db.AppendJournal(ctx, nil, recs[1:]); err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name string
			f    AuditFilter
			want []string
		}{
			{"all", AuditFilter{}, []string{"alice", "bob"}},
			{"since", AuditFilter{Since: clock.Now().Add(-time.Minute)}, []string{"bob"}},
			{"caller", AuditFilter{Caller: "alice"}, []string{"alice"}},
			{"after", AuditFilter{After: 1}, []string{"bob"}},
			{"max", AuditFilter{Max: 1}, []string{"alice"}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				got, err := db.Audit(ctx, tt.f)
				if err != nil {
					t.Fatal(err)
				}
				var callers []string
				for _, a := range got {
					callers = append(callers, a.Caller)
				}
				if strings.Join(callers, ",") != strings.Join(tt.want, ",") {
					t.Fatalf("callers %v, want %v", callers, tt.want)
				}
			})
		}
		stmts := []string{`UPDATE audit SET outcome = 'ok'`, `DELETE FROM audit`}
		if db.Backend() == BackendPostgres {
			stmts = append(stmts, `TRUNCATE audit`)
		}
		for _, stmt := range stmts {
			if _, err := db.w.ExecContext(ctx, stmt); err == nil || !strings.Contains(err.Error(), "append-only") {
				t.Errorf("%s: %v, want refused as append-only", stmt, err)
			}
		}
		if got, _ := db.Audit(ctx, AuditFilter{}); len(got) != 2 || got[1].Outcome != "NOT_AUTHORIZED" {
			t.Fatalf("audit changed: %+v", got)
		}
	})
}
