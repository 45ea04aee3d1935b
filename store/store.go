// Package store keeps the director's state in SQLite (modernc.org/sqlite, no
// cgo), the embedded default, or in PostgreSQL (pgx), which several
// directors can share.
//
// It is the only package with SQL in it, written once for both backends
// through database/sql (dialect.go says where they differ). On SQLite a DB
// has one writer connection, so writes never contend for SQLite's lock
// inside the process, and a pool of read-only connections for queries.
// Pragmas (WAL, busy_timeout, foreign_keys) and immediate write transactions
// are set in the DSN so every pooled connection has them. On PostgreSQL a DB
// is one pool for both, and other processes write beside it: a transaction
// that reads a row and then writes on what it read locks the row first
// (dialect.forUpdate), or writes with one conditional statement. The schema
// comes from the embedded migrations package, one set of files per backend.
//
// Blobs never live in rows: rows point at files under the director's data dir.
package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver
	_ "modernc.org/sqlite"             // registers the "sqlite" driver
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
	// Readers is the size of the read-only pool on SQLite, of the one pool
	// on PostgreSQL; 2×GOMAXPROCS (at least 4) when 0.
	Readers int
}

// DB is the director's database.
type DB struct {
	w    pool // SQLite: one connection, every write goes through it; PostgreSQL: the pool
	r    pool // SQLite: the read-only pool; PostgreSQL: the pool, as w
	d    dialect
	now  func() time.Time
	path string // SQLite's file; "" on PostgreSQL
	name string // the database as errors name it: the path, or the URL without its password
	// fence, when set, is checked by every write transaction (Fence).
	fence atomic.Pointer[fence]
}

// Open opens the database that dsn names and applies pending migrations:
// "postgres://..." or "postgresql://..." is a PostgreSQL database (a pgx
// connection URL), "sqlite:PATH" or a bare PATH a SQLite file, created if
// missing. It fails with ErrSchemaTooNew if the database was written by a
// newer binary.
func Open(ctx context.Context, dsn string, opts Options) (*DB, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Readers <= 0 {
		opts.Readers = max(4, 2*runtime.GOMAXPROCS(0))
	}
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		return openPostgres(ctx, dsn, opts)
	}
	path := strings.TrimPrefix(dsn, "sqlite:")
	if path == "" {
		return nil, errors.New("open store: empty path")
	}
	if strings.Contains(path, "://") {
		return nil, fmt.Errorf("open store: %q: want postgres://..., sqlite:PATH or a file's path", Redact(dsn))
	}
	return openSQLite(ctx, path, opts)
}

func openSQLite(ctx context.Context, path string, opts Options) (*DB, error) {
	if strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("open store: path %q must not contain '?' or '#'", path)
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
	db := &DB{w: pool{DB: w}, now: opts.Now, path: path, name: path}
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
	db.r = pool{DB: r}
	return db, nil
}

func openPostgres(ctx context.Context, dsn string, opts Options) (*DB, error) {
	name := Redact(dsn)
	p, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", name, err)
	}
	p.SetMaxOpenConns(opts.Readers)
	p.SetMaxIdleConns(opts.Readers)
	d := dialect{postgres: true}
	db := &DB{w: pool{DB: p, d: d}, r: pool{DB: p, d: d}, d: d, now: opts.Now, name: name}
	if err := p.PingContext(ctx); err != nil {
		p.Close()
		return nil, fmt.Errorf("open store %s: %w", name, err)
	}
	if err := db.migrate(ctx); err != nil {
		p.Close()
		return nil, fmt.Errorf("open store %s: %w", name, err)
	}
	return db, nil
}

// Redact is a database URL fit for a log line or an error: a password in
// it is replaced by "xxxxx". A path comes back as it is.
func Redact(dsn string) string {
	u, err := url.Parse(dsn)
	if err != nil || u.Scheme == "" {
		if strings.Contains(dsn, "://") {
			return "(an unparsable URL)" // it may hold a password
		}
		return dsn
	}
	if u.Scheme == "sqlite" {
		return dsn
	}
	return u.Redacted()
}

// Close closes the database's pools.
func (db *DB) Close() error {
	if db.d.postgres {
		return db.w.Close()
	}
	return errors.Join(db.r.Close(), db.w.Close())
}

// Path is the SQLite file's path, "" on PostgreSQL.
func (db *DB) Path() string { return db.path }

// Backend is BackendSQLite or BackendPostgres.
func (db *DB) Backend() string {
	if db.d.postgres {
		return BackendPostgres
	}
	return BackendSQLite
}

// IntegrityCheck runs PRAGMA integrity_check and returns an error naming the
// first problem when the database is damaged. PostgreSQL checks its own
// pages as it reads them: there it only sees that the server answers.
func (db *DB) IntegrityCheck(ctx context.Context) error {
	if db.d.postgres {
		if err := db.r.PingContext(ctx); err != nil {
			return fmt.Errorf("integrity check: %w", err)
		}
		return nil
	}
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
func (db *DB) inTx(ctx context.Context, fn func(tx *dbTx) error) error {
	t, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer t.Rollback()
	tx := &dbTx{Tx: t, d: db.d}
	if err := db.checkFence(ctx, tx); err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		return err
	}
	return t.Commit()
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
