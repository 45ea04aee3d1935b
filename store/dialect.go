package store

import (
	"context"
	"database/sql"
	"slices"
	"strconv"
	"strings"
)

// Backend names, as (*DB).Backend returns them.
const (
	BackendSQLite   = "sqlite"
	BackendPostgres = "postgres"
)

// dialect is what differs between the backends in the store's SQL. Queries
// are written once, for SQLite, with ? placeholders; where the dialects
// part ways the two variants sit side by side at the query.
type dialect struct {
	postgres bool
}

// rebind is query as the backend takes it: PostgreSQL numbers its
// placeholders ($1, $2, ...).
func (d dialect) rebind(query string) string {
	if !d.postgres {
		return query
	}
	return numberPlaceholders(query)
}

// args is args as the backend takes them. The schema keeps flags in integer
// columns on both backends (SQLite has no booleans); pgx will not write a
// Go bool into a BIGINT, so flags go as 0 or 1.
func (d dialect) args(args []any) []any {
	if !d.postgres {
		return args
	}
	var out []any // a copy once a flag is found: args may be the caller's
	for i, a := range args {
		if b, ok := a.(bool); ok {
			if out == nil {
				out = slices.Clone(args)
			}
			out[i] = int64(0)
			if b {
				out[i] = int64(1)
			}
		}
	}
	if out == nil {
		return args
	}
	return out
}

// forUpdate is the suffix that locks the rows a SELECT reads until the
// transaction ends. PostgreSQL needs it where a transaction reads a row and
// then writes on what it read, because other directors write at the same
// time; SQLite has no such clause and needs none, since a write
// transaction there holds the database's one write lock from its start.
func (d dialect) forUpdate() string {
	if d.postgres {
		return ` FOR UPDATE`
	}
	return ``
}

// forShare is forUpdate's shared form: the rows read cannot change until
// the transaction ends, but other readers may lock them too.
func (d dialect) forShare() string {
	if d.postgres {
		return ` FOR SHARE`
	}
	return ``
}

// greatest is the SQL function of the larger of two values: SQLite's MAX
// with two arguments is PostgreSQL's GREATEST.
func (d dialect) greatest() string {
	if d.postgres {
		return `GREATEST`
	}
	return `MAX`
}

// numberPlaceholders replaces each ? of query by $1, $2, ... in order. A ?
// inside a string literal ('...'), a quoted identifier ("...") or a comment
// (-- to the end of the line, /* ... */) is left alone.
func numberPlaceholders(query string) string {
	if !strings.Contains(query, "?") {
		return query
	}
	var b strings.Builder
	b.Grow(len(query) + 16)
	n := 0
	for i := 0; i < len(query); i++ {
		c := query[i]
		switch {
		case c == '\'' || c == '"':
			// A doubled quote inside is an escaped one: the loop leaves
			// the literal and enters it again, which copies it unchanged.
			end := strings.IndexByte(query[i+1:], c)
			if end < 0 {
				b.WriteString(query[i:])
				return b.String()
			}
			b.WriteString(query[i : i+end+2])
			i += end + 1
		case c == '-' && strings.HasPrefix(query[i:], "--"):
			end := strings.IndexByte(query[i:], '\n')
			if end < 0 {
				b.WriteString(query[i:])
				return b.String()
			}
			b.WriteString(query[i : i+end+1])
			i += end
		case c == '/' && strings.HasPrefix(query[i:], "/*"):
			end := strings.Index(query[i+2:], "*/")
			if end < 0 {
				b.WriteString(query[i:])
				return b.String()
			}
			b.WriteString(query[i : i+end+4])
			i += end + 3
		case c == '?':
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// pool is a *sql.DB that speaks the store's SQL: queries get the
// backend's placeholders and arguments on their way.
type pool struct {
	*sql.DB
	d dialect
}

func (p pool) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return p.DB.ExecContext(ctx, p.d.rebind(query), p.d.args(args)...)
}

func (p pool) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return p.DB.QueryContext(ctx, p.d.rebind(query), p.d.args(args)...)
}

func (p pool) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return p.DB.QueryRowContext(ctx, p.d.rebind(query), p.d.args(args)...)
}

// dbTx is a *sql.Tx that speaks the store's SQL, as pool does. Unexported
// helpers that work inside a transaction take one.
type dbTx struct {
	*sql.Tx
	d dialect
}

func (t *dbTx) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return t.Tx.ExecContext(ctx, t.d.rebind(query), t.d.args(args)...)
}

func (t *dbTx) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return t.Tx.QueryContext(ctx, t.d.rebind(query), t.d.args(args)...)
}

func (t *dbTx) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return t.Tx.QueryRowContext(ctx, t.d.rebind(query), t.d.args(args)...)
}

// PrepareContext prepares query; the statement's arguments still need
// the dialect's args.
func (t *dbTx) PrepareContext(ctx context.Context, query string) (*sql.Stmt, error) {
	return t.Tx.PrepareContext(ctx, t.d.rebind(query))
}
