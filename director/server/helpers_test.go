package server

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/fedplane/fedplane/api/aggregatorpb"
	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/api/logspb"
	"github.com/fedplane/fedplane/api/transferspb"
	"github.com/fedplane/fedplane/director/directortest"
	"github.com/fedplane/fedplane/store"
)

// Layout of the data dir the tests look into.
const (
	tmpDir         = "tmp"
	experimentsDir = "experiments"
)

var (
	newFakeClock = directortest.NewClock
	testCfg      = directortest.Config
	mustNew      = directortest.New
	writeJobDir  = directortest.JobDir
	zipOf        = directortest.Zip
	testManifest = directortest.Manifest
	submit       = directortest.Submit
	do           = directortest.Do
	shard        = directortest.Shard
)

// clients are the two OpenFL service clients over one connection.
type clients struct {
	dir directorpb.DirectorClient
	agg aggregatorpb.AggregatorClient
	log logspb.TrainingLogsClient
	xfr transferspb.TransfersClient
}

// mustStore opens a second handle on the director's database in dataDir,
// for tests to read what the director stored; closed when the test ends.
func mustStore(tb testing.TB, dataDir string) *store.DB {
	tb.Helper()
	db, err := store.Open(context.Background(), filepath.Join(dataDir, "fedplane.db"), store.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { db.Close() })
	return db
}
