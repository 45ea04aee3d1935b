package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/fedplane/fedplane/api"
)

// Pruned says whether the round's model was removed from disk by job.json's
// keep_models: its row stays, its file is gone.
func (r Round) Pruned() bool { return !r.PrunedAt.IsZero() }

// PruneRounds marks the models of rounds of experiment id as removed, in one
// transaction, and returns the files (relative to the data dir) the caller
// is to remove once it returns: only after the rows say so may a file go,
// and a crash before its removal leaves a file no row references
// (ReferencedFiles leaves pruned rows out), which start-up removes. Rounds
// already pruned are skipped. The newest round's model is what the
// experiment trains from, or its final model: pruning it is api.ErrConflict.
// The experiment is recorded as retained up to its newest round, rounds
// empty or not (see UnretainedExperiments).
func (db *DB) PruneRounds(ctx context.Context, id string, rounds []int) ([]string, error) {
	var files []string
	err := db.inTx(ctx, func(tx *dbTx) error {
		// Locked, so that the newest round cannot change under the rule
		// (another director completing one); no experiment prunes nothing.
		if _, err := lockExperiment(ctx, tx, id); err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		var newest sql.NullInt64
		if err := tx.QueryRowContext(ctx, `SELECT MAX(round) FROM rounds WHERE experiment_id = ?`, id).Scan(&newest); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE experiments SET retained_round = ? WHERE id = ?`, newest.Int64, id); err != nil {
			return err
		}
		now := nanos(db.now())
		for _, r := range rounds {
			if newest.Valid && int64(r) == newest.Int64 {
				return fmt.Errorf("round %d holds the newest model: %w", r, api.ErrConflict)
			}
			var path string
			err := tx.QueryRowContext(ctx, `SELECT model_path FROM rounds WHERE experiment_id = ? AND round = ? AND pruned_at = 0`, id, r).Scan(&path)
			if err == sql.ErrNoRows {
				continue // pruned already, or no such round
			}
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `UPDATE rounds SET pruned_at = ? WHERE experiment_id = ? AND round = ?`, now, id, r); err != nil {
				return err
			}
			// A round's server state (state_path) is not this rule's:
			// only the newest round's is kept, whatever keep_models says.
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("prune round models of %s: %w", id, err)
	}
	return files, nil
}

// UnretainedExperiments returns the experiments with a round newer than the
// one their keep_models was last applied at (PruneRounds): a crash fell
// between the round's commit and its retention.
func (db *DB) UnretainedExperiments(ctx context.Context) ([]string, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT e.id FROM experiments e
		WHERE e.retained_round < (SELECT MAX(round) FROM rounds WHERE experiment_id = e.id) ORDER BY e.id`)
	if err != nil {
		return nil, fmt.Errorf("experiments to retain: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("experiments to retain: %w", err)
		}
		out = append(out, id)
	}
	return out, rows.Err()
}
