package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/fedplane/fedplane/director"
)

// pgHeartbeat is figure 9: heartbeats/s through an in-process director on
// PostgreSQL against one on SQLite, with figure 1's harness (the largest
// -hb-envoys fleet, -hb-inflight calls in flight on -hb-conns
// connections), windows alternating between the two. Both directors also
// run their background work (director.Run), so that the scheduler and the
// liveness flush reach their databases as they do in `director serve`; a
// heartbeat of an envoy already online writes nothing itself. On
// PostgreSQL the director is one replica's: `director serve` opens it
// only once it holds the coordinator lease, which does not change its
// heartbeat path, so this director opens it directly.
//
// Registering the fleet (one UpdateShardInfo per envoy, each a database
// write) is timed too, as a second row.
func (b *bench) pgHeartbeat(ctx context.Context) ([]row, error) {
	n := slices.Max(b.cfg.hbEnvoys)
	dsn, drop, err := b.pgDatabase(ctx)
	if err != nil {
		return nil, err
	}
	defer drop()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	sqDir, err := b.dir("pg-heartbeat-sqlite")
	if err != nil {
		return nil, err
	}
	pgDir, err := b.dir("pg-heartbeat-postgres")
	if err != nil {
		return nil, err
	}
	// The fleet heartbeats only in the windows, and on a loaded machine
	// registering it takes longer than the default two periods: without a
	// longer OfflineAfter the sweep would mark envoys offline between
	// windows, and their next heartbeat would write them online again, one
	// row at a time, which a fleet heartbeating every period never does.
	const offlineAfter = time.Hour
	sq, err := startInProcess(ctx, director.Config{DataDir: sqDir, HealthCheckPeriod: hbPeriod, OfflineAfter: offlineAfter}, true)
	if err != nil {
		return nil, fmt.Errorf("director on SQLite: %w", err)
	}
	defer sq.stop()
	pg, err := startInProcess(ctx, director.Config{DataDir: pgDir, Database: dsn, HealthCheckPeriod: hbPeriod, OfflineAfter: offlineAfter}, true)
	if err != nil {
		return nil, fmt.Errorf("director on PostgreSQL: %w", err)
	}
	defer pg.stop()

	fs, err := dialFleet(sq.addr, n, b.cfg.hbConns)
	if err != nil {
		return nil, err
	}
	defer fs.close()
	fp, err := dialFleet(pg.addr, n, b.cfg.hbConns)
	if err != nil {
		return nil, err
	}
	defer fp.close()

	t0 := time.Now()
	if err := fs.register(ctx, b.cfg.hbInflight); err != nil {
		return nil, fmt.Errorf("SQLite: %w", err)
	}
	regSQLite := time.Since(t0)
	t0 = time.Now()
	if err := fp.register(ctx, b.cfg.hbInflight); err != nil {
		return nil, fmt.Errorf("PostgreSQL: %w", err)
	}
	regPG := time.Since(t0)
	b.logf("pg-heartbeat: registered %d envoys in %v on SQLite, %v on PostgreSQL", n, regSQLite.Round(time.Millisecond), regPG.Round(time.Millisecond))

	warm := min(b.cfg.hbWindow, time.Second)
	if _, err := drive(ctx, fs, b.cfg.hbInflight, warm); err != nil {
		return nil, fmt.Errorf("SQLite: %w", err)
	}
	if _, err := drive(ctx, fp, b.cfg.hbInflight, warm); err != nil {
		return nil, fmt.Errorf("PostgreSQL: %w", err)
	}
	var sqRate, pgRate float64
	for round := range b.cfg.hbRounds {
		rs, err := drive(ctx, fs, b.cfg.hbInflight, b.cfg.hbWindow)
		if err != nil {
			return nil, fmt.Errorf("SQLite: %w", err)
		}
		stopProfile, err := b.startProfile(round == b.cfg.hbRounds-1, "pg-heartbeat.pprof")
		if err != nil {
			return nil, err
		}
		rp, err := drive(ctx, fp, b.cfg.hbInflight, b.cfg.hbWindow)
		stopProfile()
		if err != nil {
			return nil, fmt.Errorf("PostgreSQL: %w", err)
		}
		sqRate += rs
		pgRate += rp
		b.logf("pg-heartbeat: %d envoys, window %d: SQLite %.0f/s, PostgreSQL %.0f/s", n, round+1, rs, rp)
	}
	sqRate /= float64(b.cfg.hbRounds)
	pgRate /= float64(b.cfg.hbRounds)
	hb := row{
		figure:   fmt.Sprintf("9. heartbeats/s, %s envoys, %d in flight, director on PostgreSQL (floor: the same on SQLite)", fmtCount(n), b.cfg.hbInflight),
		fedplane: fmt.Sprintf("%s/s", fmtCount(int(pgRate))),
		floor:    fmt.Sprintf("%s/s", fmtCount(int(sqRate))),
		ratio:    pgRate / sqRate,
	}
	hb.goal = atLeast(hb.ratio, 0.5)
	reg := row{
		figure:   fmt.Sprintf("9. registering %s envoys (UpdateShardInfo, %d in flight), PostgreSQL (floor: SQLite)", fmtCount(n), b.cfg.hbInflight),
		fedplane: fmt.Sprintf("%s/s", fmtCount(int(float64(n)/regPG.Seconds()))),
		floor:    fmt.Sprintf("%s/s", fmtCount(int(float64(n)/regSQLite.Seconds()))),
		ratio:    regSQLite.Seconds() / regPG.Seconds(),
	}
	return []row{hb, reg}, nil
}
