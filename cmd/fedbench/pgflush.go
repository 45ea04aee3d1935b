package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/fedplane/fedplane/director"
	"github.com/fedplane/fedplane/store"
)

// flushEvery is how often a director at the default health-check period
// writes plain liveness: director/director.go's flushInterval, every third
// period and at most every 30 s. Every envoy heartbeats within that
// interval, so one flush writes every registered envoy.
var flushEvery = min(3*director.DefaultHealthCheckPeriod, 30*time.Second)

// pgFlush is figure 10: the database write rate of a director with
// pgEnvoys envoys. It registers them (store.UpsertEnvoys, untimed) in a
// fresh PostgreSQL database and in a SQLite file, then times the liveness
// flush the registry does every flushEvery, store.TouchEnvoys of every
// envoy in one transaction, alternating the two backends, flushReps times
// each, each flush with later times than the last so that every row
// changes. It reports the median's rows per second and its share of the
// flush interval: a flush that took longer than the interval would fall
// behind.
func (b *bench) pgFlush(ctx context.Context) ([]row, error) {
	n := b.cfg.pgEnvoys
	dsn, drop, err := b.pgDatabase(ctx)
	if err != nil {
		return nil, err
	}
	defer drop()
	dir, err := b.dir("pg-flush")
	if err != nil {
		return nil, err
	}
	dbs := map[string]string{"SQLite": "sqlite:" + filepath.Join(dir, "fedplane.db"), "PostgreSQL": dsn}
	backends := []string{"SQLite", "PostgreSQL"}
	open := map[string]*store.DB{}
	defer func() {
		for _, db := range open {
			db.Close()
		}
	}()
	envoys := make([]store.Envoy, n)
	for i := range envoys {
		envoys[i] = store.Envoy{Name: envoyName(i), NSamples: 1000, SampleShape: []string{"28", "28"}, TargetShape: []string{"1"}}
	}
	for _, name := range backends {
		db, err := store.Open(ctx, dbs[name], store.Options{})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		open[name] = db
		t0 := time.Now()
		if err := db.UpsertEnvoys(ctx, envoys); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		b.logf("pg-flush: %s: registered %d envoys in %v (untimed)", name, n, time.Since(t0).Round(time.Millisecond))
	}

	took := map[string][]time.Duration{}
	base := time.Now()
	for rep := range b.cfg.flushReps {
		// Each envoy last seen at its own time within the interval, as a
		// fleet heartbeating at random phases is.
		at := base.Add(time.Duration(rep+1) * flushEvery)
		seen := make(map[string]time.Time, n)
		for i := range n {
			seen[envoyName(i)] = at.Add(time.Duration(i) * flushEvery / time.Duration(n))
		}
		for _, name := range backends {
			t0 := time.Now()
			if err := open[name].TouchEnvoys(ctx, seen); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			d := time.Since(t0)
			took[name] = append(took[name], d)
			b.logf("pg-flush: rep %d: %s flushed %d envoys in %v", rep+1, name, n, d.Round(time.Millisecond))
		}
	}
	sq, pg := median(took["SQLite"]), median(took["PostgreSQL"])
	cell := func(d time.Duration) string {
		return fmt.Sprintf("%s rows/s; %s; %.1f%% of %v", fmtCount(int(float64(n)/d.Seconds())), fmtMs(d), 100*d.Seconds()/flushEvery.Seconds(), flushEvery)
	}
	worst := max(sq, pg).Seconds() / flushEvery.Seconds()
	r := row{
		figure:   fmt.Sprintf("10. liveness flush of %s envoys (store.TouchEnvoys), PostgreSQL (floor: SQLite): rate; time; share of the flush interval, median of %d", fmtCount(n), b.cfg.flushReps),
		fedplane: cell(pg),
		floor:    cell(sq),
		ratio:    sq.Seconds() / pg.Seconds(),
		goal:     below(worst, 1, " interval, both"),
	}
	return []row{r}, nil
}
