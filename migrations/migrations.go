// Package migrations embeds the director's SQL schema migrations.
//
// Each file is named NNNN_name.sql; store applies them in numeric order, each in
// its own transaction, and records the applied versions in schema_migrations.
// A migration is never edited once it has shipped: a change is a new file.
package migrations

import "embed"

// FS holds every NNNN_name.sql file of this directory.
//
//go:embed *.sql
var FS embed.FS
