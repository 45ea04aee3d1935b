package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/fedplane/fedplane/api"
)

// Experiment is a job as the store keeps it.
type Experiment struct {
	ID            string
	Name          string
	Submitter     string
	SubmitterOrg  string
	SubmitterRole string
	Manifest      string // job.json as validated, JSON
	Status        api.JobStatus
	Reason        string
	CreatedAt     time.Time
	StartedAt     time.Time
	FinishedAt    time.Time
	ArchivePath   string // relative to the data dir
	ArchiveSHA256 string
	ArchiveSize   int64
	// FolderName is the job folder a FLARE admin client named when it
	// submitted the job, "" otherwise.
	FolderName string
	// Signature is the submitter's signature of the archive (JSON), nil
	// when unsigned. CreateExperiment stores it; reads leave it nil (see
	// JobSignature), so listings do not carry it.
	Signature []byte

	// Derived when read, not stored: how many rounds have been aggregated
	// (the newest global model's round) and how many envoys take part.
	RoundsDone   int
	Participants int
}

const experimentColumns = `id, name, submitter, submitter_org, submitter_role, manifest, status, reason,
	created_at, started_at, finished_at, archive_path, archive_sha256, archive_size, folder_name`

// experimentSelect reads experimentColumns and the derived fields, each an
// index lookup by the primary keys of rounds and experiment_envoys, so a
// listing of jobs costs one query however many there are.
const experimentSelect = experimentColumns + `,
	(SELECT COALESCE(MAX(r.round), 0) FROM rounds r WHERE r.experiment_id = experiments.id),
	(SELECT COUNT(*) FROM experiment_envoys p WHERE p.experiment_id = experiments.id)`

// CreateExperiment inserts e, and with it rounds (the initial model), in one
// transaction. CreatedAt defaults to now and Status to pending.
func (db *DB) CreateExperiment(ctx context.Context, e Experiment, rounds ...Round) (Experiment, error) {
	if e.CreatedAt.IsZero() {
		e.CreatedAt = db.now().UTC()
	}
	if e.Status == "" {
		e.Status = api.JobPending
	}
	err := db.inTx(ctx, func(tx *dbTx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO experiments (`+experimentColumns+`, signature)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			e.ID, e.Name, e.Submitter, e.SubmitterOrg, e.SubmitterRole, e.Manifest, e.Status, e.Reason,
			nanos(e.CreatedAt), nanos(e.StartedAt), nanos(e.FinishedAt), e.ArchivePath, e.ArchiveSHA256, e.ArchiveSize, e.FolderName, e.Signature)
		if err != nil {
			return err
		}
		for _, r := range rounds {
			r.ExperimentID = e.ID
			if err := insertRoundTx(ctx, tx, r, nanos(e.CreatedAt)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return Experiment{}, fmt.Errorf("create experiment %s: %w", e.ID, err)
	}
	return e, nil
}

// JobSignature returns the signature stored with experiment id: nil for an
// unsigned job, api.ErrNotFound for no such experiment.
func (db *DB) JobSignature(ctx context.Context, id string) ([]byte, error) {
	var sig []byte
	err := db.r.QueryRowContext(ctx, `SELECT signature FROM experiments WHERE id = ?`, id).Scan(&sig)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: no experiment %q", api.ErrNotFound, id)
	}
	if err != nil {
		return nil, fmt.Errorf("signature of %s: %w", id, err)
	}
	return sig, nil
}

// GetExperiment returns the experiment with that exact id, or api.ErrNotFound.
func (db *DB) GetExperiment(ctx context.Context, id string) (Experiment, error) {
	e, err := scanExperiment(db.r.QueryRowContext(ctx, `SELECT `+experimentSelect+` FROM experiments WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return Experiment{}, fmt.Errorf("experiment %s: %w", id, api.ErrNotFound)
	}
	if err != nil {
		return Experiment{}, fmt.Errorf("get experiment %s: %w", id, err)
	}
	return e, nil
}

// FindExperiment returns the one experiment whose id starts with prefix:
// api.ErrNotFound if none does, api.ErrAmbiguous if several do.
func (db *DB) FindExperiment(ctx context.Context, prefix string) (Experiment, error) {
	prefix = strings.ToLower(prefix)
	for _, r := range prefix {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f' || r == '-') {
			return Experiment{}, fmt.Errorf("experiment %q: %w", prefix, api.ErrNotFound)
		}
	}
	rows, err := db.r.QueryContext(ctx, `SELECT `+experimentSelect+` FROM experiments
		WHERE id >= ? AND id < ? ORDER BY id LIMIT 2`, prefix, prefix+"\x7f")
	if err != nil {
		return Experiment{}, fmt.Errorf("find experiment %q: %w", prefix, err)
	}
	defer rows.Close()
	var found []Experiment
	for rows.Next() {
		e, err := scanExperiment(rows)
		if err != nil {
			return Experiment{}, fmt.Errorf("find experiment %q: %w", prefix, err)
		}
		found = append(found, e)
	}
	if err := rows.Err(); err != nil {
		return Experiment{}, fmt.Errorf("find experiment %q: %w", prefix, err)
	}
	switch len(found) {
	case 0:
		return Experiment{}, fmt.Errorf("experiment %q: %w", prefix, api.ErrNotFound)
	case 1:
		return found[0], nil
	default:
		return Experiment{}, fmt.Errorf("experiment %q: %w: it matches more than one job", prefix, api.ErrAmbiguous)
	}
}

// ExperimentFilter narrows ListExperiments.
type ExperimentFilter struct {
	Name       string // exactly this name
	NamePrefix string
	Statuses   []api.JobStatus // any of these; all when empty
	Max        int             // 0 means no limit
	NewestLast bool            // default order is newest first
}

// ListExperiments returns experiments ordered by submit time.
func (db *DB) ListExperiments(ctx context.Context, f ExperimentFilter) ([]Experiment, error) {
	q := `SELECT ` + experimentSelect + ` FROM experiments WHERE 1 = 1`
	var args []any
	if f.Name != "" {
		q += ` AND name = ?`
		args = append(args, f.Name)
	}
	if f.NamePrefix != "" {
		q += ` AND substr(name, 1, ?) = ?`
		args = append(args, len(f.NamePrefix), f.NamePrefix)
	}
	if len(f.Statuses) > 0 {
		q += ` AND status IN (?` + strings.Repeat(`, ?`, len(f.Statuses)-1) + `)`
		for _, s := range f.Statuses {
			args = append(args, s)
		}
	}
	if f.NewestLast {
		q += ` ORDER BY created_at, id`
	} else {
		q += ` ORDER BY created_at DESC, id DESC`
	}
	if f.Max > 0 {
		q += ` LIMIT ?`
		args = append(args, f.Max)
	}
	rows, err := db.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("list experiments: %w", err)
	}
	defer rows.Close()
	var out []Experiment
	for rows.Next() {
		e, err := scanExperiment(rows)
		if err != nil {
			return nil, fmt.Errorf("list experiments: %w", err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list experiments: %w", err)
	}
	return out, nil
}

// CountExperiments returns the number of experiments in each status.
func (db *DB) CountExperiments(ctx context.Context) (map[api.JobStatus]int, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT status, COUNT(*) FROM experiments GROUP BY status`)
	if err != nil {
		return nil, fmt.Errorf("count experiments: %w", err)
	}
	defer rows.Close()
	out := map[api.JobStatus]int{}
	for rows.Next() {
		var s api.JobStatus
		var n int
		if err := rows.Scan(&s, &n); err != nil {
			return nil, fmt.Errorf("count experiments: %w", err)
		}
		out[s] = n
	}
	return out, rows.Err()
}

// SetExperimentStatus moves experiment id to status to, if its current status
// is one of from; otherwise it returns an error wrapping api.ErrConflict that names
// the current status. Leaving a terminal state is always refused. Entering
// in_progress sets started_at; entering a terminal state sets finished_at.
func (db *DB) SetExperimentStatus(ctx context.Context, id string, from []api.JobStatus, to api.JobStatus, reason string) (Experiment, error) {
	var out Experiment
	err := db.inTx(ctx, func(tx *dbTx) error {
		var err error
		out, err = setStatusTx(ctx, tx, db.now().UTC(), id, from, to, reason)
		return err
	})
	if err != nil {
		return Experiment{}, fmt.Errorf("set status of experiment %s: %w", id, err)
	}
	return out, nil
}

// lockExperiment reads experiment id's status in tx and, on PostgreSQL,
// locks its row until tx ends, so that what tx then writes on that status
// cannot cross another director's change of it. Every transaction that
// decides on an experiment's status locks it first, and locks no other
// experiment. A missing experiment is sql.ErrNoRows.
func lockExperiment(ctx context.Context, tx *dbTx, id string) (api.JobStatus, error) {
	var status api.JobStatus
	err := tx.QueryRowContext(ctx, `SELECT status FROM experiments WHERE id = ?`+tx.d.forUpdate(), id).Scan(&status)
	return status, err
}

func setStatusTx(ctx context.Context, tx *dbTx, now time.Time, id string, from []api.JobStatus, to api.JobStatus, reason string) (Experiment, error) {
	var e Experiment
	_, err := lockExperiment(ctx, tx, id)
	if err == nil {
		e, err = scanExperiment(tx.QueryRowContext(ctx, `SELECT `+experimentSelect+` FROM experiments WHERE id = ?`, id))
	}
	if errors.Is(err, sql.ErrNoRows) {
		return Experiment{}, fmt.Errorf("experiment %s: %w", id, api.ErrNotFound)
	}
	if err != nil {
		return Experiment{}, err
	}
	if e.Status.Terminal() || !slices.Contains(from, e.Status) {
		return Experiment{}, fmt.Errorf("experiment %s is %s: %w", id, e.Status, api.ErrConflict)
	}
	e.Status, e.Reason = to, reason
	if to == api.JobInProgress {
		e.StartedAt = now
	}
	if to.Terminal() {
		e.FinishedAt = now
	}
	_, err = tx.ExecContext(ctx, `UPDATE experiments SET status = ?, reason = ?, started_at = ?, finished_at = ? WHERE id = ?`,
		e.Status, e.Reason, nanos(e.StartedAt), nanos(e.FinishedAt), id)
	return e, err
}

// DeleteExperiment removes experiment id's rows unless its status is one of
// busy (api.ErrConflict then). The caller removes its files after this commits.
func (db *DB) DeleteExperiment(ctx context.Context, id string, busy ...api.JobStatus) error {
	err := db.inTx(ctx, func(tx *dbTx) error {
		status, err := lockExperiment(ctx, tx, id)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("experiment %s: %w", id, api.ErrNotFound)
		}
		if err != nil {
			return err
		}
		for _, b := range busy {
			if status == b {
				return fmt.Errorf("experiment %s is %s: %w", id, status, api.ErrConflict)
			}
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM experiments WHERE id = ?`, id)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete experiment %s: %w", id, err)
	}
	return nil
}

// FileRef is a file a row points at.
type FileRef struct {
	ExperimentID string
	Status       api.JobStatus // the experiment's
	Path         string        // relative to the data dir
}

// ReferencedFiles returns every file a row points at: archives, round
// models not pruned (PruneRounds), the latest server state and the task
// results of open rounds, so start-up can remove files no row references
// and find rows whose files are missing.
func (db *DB) ReferencedFiles(ctx context.Context) ([]FileRef, error) {
	rows, err := db.r.QueryContext(ctx, `
		SELECT id, status, archive_path FROM experiments
		UNION ALL SELECT r.experiment_id, e.status, r.model_path FROM rounds r JOIN experiments e ON e.id = r.experiment_id
			WHERE r.pruned_at = 0
		UNION ALL SELECT r.experiment_id, e.status, r.state_path FROM rounds r JOIN experiments e ON e.id = r.experiment_id
			-- server state is removed once the next round's is stored: only the latest counts
			WHERE r.state_path <> '' AND r.round = (SELECT MAX(round) FROM rounds WHERE experiment_id = r.experiment_id)
		UNION ALL SELECT t.experiment_id, e.status, t.result_path FROM task_results t JOIN experiments e ON e.id = t.experiment_id
			-- reports are deleted once their round is aggregated: only the open round's count
			WHERE t.round >= (SELECT MAX(round) FROM rounds WHERE experiment_id = t.experiment_id)`)
	if err != nil {
		return nil, fmt.Errorf("list referenced files: %w", err)
	}
	defer rows.Close()
	var out []FileRef
	for rows.Next() {
		var f FileRef
		if err := rows.Scan(&f.ExperimentID, &f.Status, &f.Path); err != nil {
			return nil, fmt.Errorf("list referenced files: %w", err)
		}
		out = append(out, f)
	}
	return out, rows.Err()
}

func scanExperiment(s rowScanner) (Experiment, error) {
	var (
		e                          Experiment
		created, started, finished int64
	)
	if err := s.Scan(&e.ID, &e.Name, &e.Submitter, &e.SubmitterOrg, &e.SubmitterRole, &e.Manifest, &e.Status, &e.Reason,
		&created, &started, &finished, &e.ArchivePath, &e.ArchiveSHA256, &e.ArchiveSize, &e.FolderName, &e.RoundsDone, &e.Participants); err != nil {
		return Experiment{}, err
	}
	e.CreatedAt, e.StartedAt, e.FinishedAt = fromNanos(created), fromNanos(started), fromNanos(finished)
	return e, nil
}
