// Package migrations embeds the director's SQL schema migrations.
//
// Each file is named NNNN_name.sql; store applies them in numeric order, each in
// its own transaction, and records the applied versions in schema_migrations.
// A migration is never edited once it has shipped: a change is a new file.
//
// The files of this directory are SQLite's; postgres/ holds PostgreSQL's,
// one for each of SQLite's with the same number and name and the same
// meaning in that dialect. A change of schema is a new file in both.
package migrations

import "embed"

// FS holds every NNNN_name.sql file of this directory.
//
//go:embed *.sql
var FS embed.FS

// Postgres holds postgres/NNNN_name.sql, PostgreSQL's migrations.
//
//go:embed postgres/*.sql
var Postgres embed.FS
