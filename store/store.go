// Package store keeps the director's state in SQLite (modernc.org/sqlite, no cgo).
//
// It is the only package with SQL in it. A DB has one writer connection, so
// writes never contend for SQLite's lock inside the process, and a pool of
// read-only connections for queries. Pragmas (WAL, busy_timeout, foreign_keys)
// and immediate write transactions are set in the DSN so every pooled connection
// has them. The schema comes from the embedded migrations package.
//
// Blobs never live in rows: rows point at files under the director's data dir.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"time"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// Sentinel errors of the store beside the kinds of package api (a missing
// row is api.ErrNotFound, a refused status change api.ErrConflict).
var (
	// ErrSchemaTooNew means the database was migrated by a newer fedplane than
	// this binary; running on it could corrupt data the binary does not know.
	ErrSchemaTooNew = errors.New("database schema is newer than this binary")
)

// DefaultBusyTimeout is how long a connection waits for SQLite's lock.
const DefaultBusyTimeout = 10 * time.Second

// Options tunes Open. The zero value is usable.
type Options struct {
	// Now is the clock; time.Now when nil. Tests inject a fake one.
	Now func() time.Time
	// Readers is the size of the read-only pool; 2×GOMAXPROCS (at least 4) when 0.
	Readers int
}

// DB is the director's SQLite database.
type DB struct {
	w    *sql.DB // one connection: every write goes through it
	r    *sql.DB // read-only pool
	now  func() time.Time
	path string
}

// Open opens (creating if needed) the database at path and applies pending
// migrations. It fails with ErrSchemaTooNew if the database was written by a
// newer binary.
func Open(ctx context.Context, path string, opts Options) (*DB, error) {
	if path == "" {
		return nil, errors.New("open store: empty path")
	}
	if strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("open store: path %q must not contain '?' or '#'", path)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Readers <= 0 {
		opts.Readers = max(4, 2*runtime.GOMAXPROCS(0))
	}
	pragmas := fmt.Sprintf("_pragma=busy_timeout(%d)&_pragma=foreign_keys(1)&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)",
		DefaultBusyTimeout.Milliseconds())

	w, err := sql.Open("sqlite", "file:"+path+"?"+pragmas+"&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	w.SetConnMaxIdleTime(0)
	db := &DB{w: w, now: opts.Now, path: path}
	if err := w.PingContext(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if err := db.migrate(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}

	r, err := sql.Open("sqlite", "file:"+path+"?"+pragmas+"&_pragma=query_only(1)")
	if err != nil {
		w.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	r.SetMaxOpenConns(opts.Readers)
	r.SetMaxIdleConns(opts.Readers)
	db.r = r
	return db, nil
}

// Close closes both pools.
func (db *DB) Close() error {
	return errors.Join(db.r.Close(), db.w.Close())
}

// Path is the database file's path.
func (db *DB) Path() string { return db.path }

// IntegrityCheck runs PRAGMA integrity_check and returns an error naming the
// first problem when the database is damaged.
func (db *DB) IntegrityCheck(ctx context.Context) error {
	var res string
	if err := db.r.QueryRowContext(ctx, "PRAGMA integrity_check").Scan(&res); err != nil {
		return fmt.Errorf("integrity check: %w", err)
	}
	if res != "ok" {
		return fmt.Errorf("integrity check: %s", res)
	}
	return nil
}

// inTx runs fn in a write transaction, committing if fn returns nil.
func (db *DB) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// nanos converts t to the stored form (Unix nanoseconds); the zero time is 0.
func nanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// fromNanos is the inverse of nanos.
func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}
