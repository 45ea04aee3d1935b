package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"io/fs"
	"sort"
	"strconv"
	"strings"

	"github.com/fedplane/fedplane/migrations"
)

// migration is one NNNN_name.sql file.
type migration struct {
	version int
	name    string
	sql     string
}

// loadMigrations reads and orders the embedded migration files. It refuses
// malformed names and duplicate versions, which would otherwise be applied in
// an order nobody chose.
func loadMigrations(fsys fs.FS) ([]migration, error) {
	names, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return nil, err
	}
	var ms []migration
	seen := map[int]string{}
	for _, n := range names {
		num, rest, ok := strings.Cut(strings.TrimSuffix(n, ".sql"), "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 || rest == "" {
			return nil, fmt.Errorf("migration %q: name must be NNNN_name.sql", n)
		}
		if prev, dup := seen[v]; dup {
			return nil, fmt.Errorf("migrations %q and %q share version %d", prev, n, v)
		}
		seen[v] = n
		b, err := fs.ReadFile(fsys, n)
		if err != nil {
			return nil, err
		}
		ms = append(ms, migration{version: v, name: rest, sql: string(b)})
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	return ms, nil
}

// migrateLockKey is the PostgreSQL advisory lock that directors starting
// together take around their migrations, so that one applies them and the
// others find them applied: "fedplane" in ASCII.
const migrateLockKey int64 = 0x666564706c616e65

// migrationFS is the backend's set of migration files.
func (db *DB) migrationFS() fs.FS {
	if db.d.postgres {
		sub, err := fs.Sub(migrations.Postgres, "postgres")
		if err != nil {
			panic(err) // a constant, valid directory name
		}
		return sub
	}
	return migrations.FS
}

// migrate applies every migration newer than the database's version, each in
// its own transaction together with its schema_migrations row.
func (db *DB) migrate(ctx context.Context) error {
	ms, err := loadMigrations(db.migrationFS())
	if err != nil {
		return err
	}
	return db.applyMigrations(ctx, ms)
}

// schemaMigrationsTable is the table of applied migrations, per backend.
func (d dialect) schemaMigrationsTable() string {
	if d.postgres {
		return `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    BIGINT PRIMARY KEY,
		name       TEXT   NOT NULL,
		applied_at BIGINT NOT NULL
	)`
	}
	return `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		name       TEXT    NOT NULL,
		applied_at INTEGER NOT NULL
	) STRICT`
}

func (db *DB) applyMigrations(ctx context.Context, ms []migration) (err error) {
	// One connection throughout: PostgreSQL's advisory lock belongs to
	// the session that took it.
	conn, err := db.w.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	if db.d.postgres {
		if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock($1)`, migrateLockKey); err != nil {
			return fmt.Errorf("lock for migrations: %w", err)
		}
		defer func() {
			_, uerr := conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock($1)`, migrateLockKey)
			if uerr != nil {
				// Closing the session releases the lock; the pool must
				// not keep this connection with it.
				conn.Raw(func(any) error { return driver.ErrBadConn })
			}
		}()
	}
	if _, err := conn.ExecContext(ctx, db.d.schemaMigrationsTable()); err != nil {
		return fmt.Errorf("create schema_migrations: %w", err)
	}
	cur, err := schemaVersion(ctx, conn)
	if err != nil {
		return err
	}
	latest := 0
	if len(ms) > 0 {
		latest = ms[len(ms)-1].version
	}
	if cur > latest {
		return fmt.Errorf("%w: database %s is at schema version %d, this binary knows up to %d; run a newer fedplane",
			ErrSchemaTooNew, db.name, cur, latest)
	}
	for _, m := range ms {
		if m.version <= cur {
			continue
		}
		if err := db.applyMigration(ctx, conn, m); err != nil {
			return fmt.Errorf("apply migration %04d_%s: %w", m.version, m.name, err)
		}
	}
	return nil
}

// applyMigration applies m in a transaction of its own on conn.
func (db *DB) applyMigration(ctx context.Context, conn *sql.Conn, m migration) error {
	t, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer t.Rollback()
	tx := &dbTx{Tx: t, d: db.d}
	// Through the embedded *sql.Tx: a migration's text is the backend's
	// own SQL, with no placeholders to number.
	if _, err := tx.Tx.ExecContext(ctx, m.sql); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)`,
		m.version, m.name, nanos(db.now())); err != nil {
		return err
	}
	return t.Commit()
}

// SchemaVersion is the highest migration applied to the database.
func (db *DB) SchemaVersion(ctx context.Context) (int, error) {
	return schemaVersion(ctx, db.r)
}

// rowQuerier is what schemaVersion needs of a pool or a connection.
type rowQuerier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func schemaVersion(ctx context.Context, q rowQuerier) (int, error) {
	var v sql.NullInt64
	if err := q.QueryRowContext(ctx, `SELECT MAX(version) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return int(v.Int64), nil
}
