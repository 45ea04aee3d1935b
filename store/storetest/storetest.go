// Package storetest gives tests a fresh database of each of the store's
// backends: SQLite in a temp dir, and PostgreSQL on the server that
// FEDPLANE_TEST_POSTGRES names.
//
// FEDPLANE_TEST_POSTGRES is a URL to a PostgreSQL server on which the tests
// may create and drop databases, e.g.
// postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable
// (.ci/postgres.sh starts a throwaway one). Without it the PostgreSQL half
// of a test skips, except under CI=true, where it fails: CI tests both.
package storetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
)

// EnvPostgres names the variable holding the PostgreSQL server's URL.
const EnvPostgres = "FEDPLANE_TEST_POSTGRES"

// EachBackend runs test once per backend, as subtests named "sqlite" and
// "postgres", each with the URL of a fresh, empty database of its own
// (store.Open takes it).
func EachBackend(t *testing.T, test func(t *testing.T, dsn string)) {
	t.Helper()
	t.Run("sqlite", func(t *testing.T) { test(t, SQLite(t)) })
	t.Run("postgres", func(t *testing.T) { test(t, Postgres(t)) })
}

// SQLite is the URL of a SQLite file in a temp dir of tb's.
func SQLite(tb testing.TB) string {
	return "sqlite:" + filepath.Join(tb.TempDir(), "fedplane.db")
}

// Postgres creates an empty database on the FEDPLANE_TEST_POSTGRES server,
// dropped when tb ends, and returns its URL. Without the variable tb skips,
// or fails under CI=true.
func Postgres(tb testing.TB) string {
	tb.Helper()
	server := os.Getenv(EnvPostgres)
	if server == "" {
		if os.Getenv("CI") == "true" {
			tb.Fatalf("%s is not set: under CI=true the PostgreSQL tests must run (.ci/run starts a server)", EnvPostgres)
		}
		tb.Skipf("%s is not set: PostgreSQL not tested (make test starts a server when PostgreSQL is installed)", EnvPostgres)
	}
	u, err := url.Parse(server)
	if err != nil {
		tb.Fatalf("%s: %v", EnvPostgres, err)
	}
	var b [8]byte
	rand.Read(b[:])
	name := "fedplane_test_" + hex.EncodeToString(b[:])

	admin, err := sql.Open("pgx", server)
	if err != nil {
		tb.Fatalf("%s: %v", EnvPostgres, err)
	}
	ctx := context.Background()
	// The name is ours, made of [a-z0-9_]: it needs no quoting.
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		admin.Close()
		tb.Fatalf("create test database on %s: %v", u.Redacted(), err)
	}
	tb.Cleanup(func() {
		// FORCE ends the sessions a test left open (PostgreSQL 13 on).
		if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			tb.Errorf("drop test database %s: %v", name, err)
		}
		admin.Close()
	})
	u.Path = "/" + name
	return u.String()
}
