package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// ErrNotEmpty means Copy was given a target database that has rows: a copy
// merged into another director's state would mix two federations.
var ErrNotEmpty = errors.New("target database is not empty")

// TableCount is how many rows Copy copied into one table.
type TableCount struct {
	Table string
	Rows  int64
}

// copyTables are the store's tables, each after the tables its rows
// reference, with every column (TestCopyTablesCoverSchema keeps this list
// whole as migrations add to the schema). metrics' rowid is its sequence
// number (MetricsAfter), copied like events' and audit's seq, so that
// readers following them carry on where they were.
var copyTables = []struct {
	name, columns string
	serial        string // the column numbered by the database, "" for none
}{
	{"envoys", envoyColumns, ""},
	{"experiments", experimentColumns + `, signature, retained_round`, ""},
	{"experiment_envoys", `experiment_id, envoy, status, round, reason, updated_at`, ""},
	{"rounds", `experiment_id, round, model_path, model_sha256, created_at, participants, state_path, state_sha256, pruned_at`, ""},
	{"task_results", `experiment_id, round, envoy, data_size, result_path, received_at`, ""},
	{"metrics", `rowid, experiment_id, round, origin, task, name, value, time`, "rowid"},
	{"events", `seq, time, kind, job, job_name, envoy, round, message, metrics`, "seq"},
	{"audit", `seq, time, caller, org, kind, role, remote, channel, action, target, outcome, detail`, "seq"},
	{"leases", `name, holder, epoch, expires_at`, ""},
}

// Copy copies every row of src into dst, which must be empty (ErrNotEmpty
// otherwise), at the same schema version, and returns the rows copied per
// table. It reads src in one transaction and writes dst in one, so dst
// gets a consistent copy or nothing; on PostgreSQL the target's tables are
// locked against writers meanwhile. Blobs are not copied: rows name files
// relative to the data dir, which stays where it is.
func Copy(ctx context.Context, dst, src *DB) ([]TableCount, error) {
	sv, err := src.SchemaVersion(ctx)
	if err != nil {
		return nil, fmt.Errorf("copy from %s: %w", src.name, err)
	}
	dv, err := dst.SchemaVersion(ctx)
	if err != nil {
		return nil, fmt.Errorf("copy to %s: %w", dst.name, err)
	}
	if sv != dv {
		return nil, fmt.Errorf("copy from %s at schema version %d to %s at %d: the versions must match", src.name, sv, dst.name, dv)
	}

	var opts *sql.TxOptions
	if src.d.postgres {
		// One snapshot for every table; SQLite's read transaction is one.
		opts = &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true}
	}
	rt, err := src.r.BeginTx(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("copy from %s: %w", src.name, err)
	}
	defer rt.Rollback()
	from := &dbTx{Tx: rt, d: src.d}

	var counts []TableCount
	err = dst.inTx(ctx, func(to *dbTx) error {
		if to.d.postgres {
			names := make([]string, len(copyTables))
			for i, t := range copyTables {
				names[i] = t.name
			}
			if _, err := to.ExecContext(ctx, `LOCK TABLE `+strings.Join(names, ", ")+` IN EXCLUSIVE MODE`); err != nil {
				return err
			}
		}
		for _, t := range copyTables {
			var one int
			err := to.QueryRowContext(ctx, `SELECT 1 FROM `+t.name+` LIMIT 1`).Scan(&one)
			if err == nil {
				return fmt.Errorf("%w: table %s has rows", ErrNotEmpty, t.name)
			}
			if !errors.Is(err, sql.ErrNoRows) {
				return err
			}
		}
		for _, t := range copyTables {
			n, err := copyTable(ctx, to, from, t.name, t.columns)
			if err != nil {
				return fmt.Errorf("table %s: %w", t.name, err)
			}
			if t.serial != "" && to.d.postgres {
				// Identity columns take their next number from a sequence
				// that explicit values do not move; SQLite's AUTOINCREMENT
				// counter follows them by itself.
				if _, err := to.ExecContext(ctx, `SELECT setval(pg_get_serial_sequence('`+t.name+`', '`+t.serial+`'),
					COALESCE((SELECT MAX(`+t.serial+`) FROM `+t.name+`), 0) + 1, false)`); err != nil {
					return fmt.Errorf("table %s: move its sequence past the copied rows: %w", t.name, err)
				}
			}
			counts = append(counts, TableCount{Table: t.name, Rows: n})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("copy %s to %s: %w", src.name, dst.name, err)
	}
	return counts, nil
}

// copyTable inserts every row of table from into to.
func copyTable(ctx context.Context, to, from *dbTx, table, columns string) (int64, error) {
	ncol := strings.Count(columns, ",") + 1
	ins, err := to.PrepareContext(ctx, `INSERT INTO `+table+` (`+columns+`) VALUES (?`+strings.Repeat(`, ?`, ncol-1)+`)`)
	if err != nil {
		return 0, err
	}
	defer ins.Close()
	rows, err := from.QueryContext(ctx, `SELECT `+columns+` FROM `+table)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	vals := make([]any, ncol)
	ptrs := make([]any, ncol)
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	var n int64
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return n, err
		}
		// Each backend hands back integers, floats, strings, bytes and
		// NULLs, which both take as they are.
		if _, err := ins.ExecContext(ctx, vals...); err != nil {
			return n, err
		}
		n++
	}
	return n, rows.Err()
}
