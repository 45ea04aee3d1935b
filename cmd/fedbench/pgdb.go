package main

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" driver

	"github.com/fedplane/fedplane/store"
)

// pgDatabase creates a fresh, empty database on the -postgres server and
// returns its URL and a function that drops it. Every figure on PostgreSQL
// starts from its own database, as a new deployment does, and leaves
// nothing behind on the server.
func (b *bench) pgDatabase(ctx context.Context) (dsn string, drop func(), err error) {
	u, err := url.Parse(b.cfg.postgres)
	if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		return "", nil, fmt.Errorf("-postgres %q: want a postgres://USER@HOST:PORT/DB URL", store.Redact(b.cfg.postgres))
	}
	var r [8]byte
	rand.Read(r[:])
	name := "fedbench_" + hex.EncodeToString(r[:])
	admin, err := sql.Open("pgx", b.cfg.postgres)
	if err != nil {
		return "", nil, fmt.Errorf("-postgres %s: %w", u.Redacted(), err)
	}
	// The name is ours, made of [a-z0-9_]: it needs no quoting.
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		admin.Close()
		return "", nil, fmt.Errorf("create database on %s: %w", u.Redacted(), err)
	}
	drop = func() {
		defer admin.Close()
		if b.cfg.keep {
			b.logf("kept database %s", name)
			return
		}
		// Not the figure's context: an interrupted run drops its database too.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		// FORCE ends the sessions a killed director left open (PostgreSQL 13 on).
		if _, err := admin.ExecContext(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			b.logf("drop database %s: %v", name, err)
		}
	}
	u.Path = "/" + name
	return u.String(), drop, nil
}
