package e2e

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fedplane/fedplane/store"
	"github.com/fedplane/fedplane/store/storetest"
)

// TestPostgresBackend runs a director on PostgreSQL (--database) with two
// envoys, kills it with SIGKILL while a round trains, starts it again on
// the same database and data dir, and checks that the job finishes with
// the model of an uninterrupted run, the state in PostgreSQL and no SQLite
// file in the data dir.
func TestPostgresBackend(t *testing.T) {
	dsn := storetest.Postgres(t)
	flags := append([]string{"--database", dsn}, fastDirector...)
	d := startDirectorAdmin(t, t.TempDir(), flags...)
	shardA := makeShard(t, 1, 10)
	startEnvoy(t, d, "site-a", shardA)
	startEnvoy(t, d, "site-b", makeShard(t, 3, 30))
	waitOnline(t, d, "site-a", "site-b")
	id := submitJob(t, d, trainJob(t, "on-postgres", `"min_envoys": 2`, 3, "slow", "1m"))
	eventually(t, 60*time.Second, "round 0 aggregated", func() bool { return roundModelExists(d.dataDir, id, 1) })
	eventually(t, 60*time.Second, "site-a training round 1", func() bool { return trainingRound(shardA) == "1" })
	d.proc.Kill()
	d = restartDirector(t, d, flags...)
	if r := fladmin(t, d.admin, "wait-job", id, "--wait-timeout", "90s"); r.code != 0 {
		t.Fatalf("job after a director kill: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	expectConstants(t, d.dataDir, id, 3, (1.0*10+3*30)/40)

	if _, err := os.Stat(filepath.Join(d.dataDir, "fedplane.db")); !os.IsNotExist(err) {
		t.Fatalf("a SQLite file in the data dir of a director on PostgreSQL: %v", err)
	}
	db, err := store.Open(context.Background(), dsn, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rounds, err := db.Rounds(context.Background(), id)
	if err != nil || len(rounds) != 4 {
		t.Fatalf("rounds in PostgreSQL: %d (%v), want 4", len(rounds), err)
	}
}
