package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/fedplane/fedplane/api"
)

// ExperimentEnvoy is one participant's state in an experiment.
type ExperimentEnvoy struct {
	ExperimentID string
	Envoy        string
	Status       api.EnvoyState
	Round        int
	Reason       string
	UpdatedAt    time.Time
}

// Round is the global model round Round trains from (the final model when
// Round equals the manifest's rounds).
type Round struct {
	ExperimentID string
	Round        int
	ModelPath    string // relative to the data dir
	ModelSHA256  string
	// StatePath is the server optimizer state written with the model
	// (relative to the data dir), "" when the aggregator keeps none.
	StatePath   string
	StateSHA256 string
	CreatedAt   time.Time
	// Participants are the envoys sampled to train the round; nil when
	// every participant trains it.
	Participants []string
	// PrunedAt is when job.json's keep_models had the model removed from
	// disk (PruneRounds); zero while it is kept.
	PrunedAt time.Time
}

// TaskResult is one envoy's report for one round.
type TaskResult struct {
	ExperimentID string
	Round        int
	Envoy        string
	DataSize     int64
	ResultPath   string // relative to the data dir
	ReceivedAt   time.Time
}

// Metric is one value reported for a round, by an envoy or the aggregator.
type Metric struct {
	Seq          int64 // increases with every metric stored; set by the store
	ExperimentID string
	Round        int
	Origin       string
	Task         string
	Name         string
	Value        float64
	Time         time.Time
}

// StartExperiment moves a pending experiment to in_progress with envoys as
// its participants, and sampled (nil: all of them) as the first round's,
// in one transaction.
func (db *DB) StartExperiment(ctx context.Context, id string, envoys, sampled []string) (Experiment, error) {
	var out Experiment
	err := db.inTx(ctx, func(tx *dbTx) error {
		var err error
		out, err = setStatusTx(ctx, tx, db.now().UTC(), id, []api.JobStatus{api.JobPending}, api.JobInProgress, "")
		if err != nil {
			return err
		}
		if sampled != nil {
			list, err := marshalNames(sampled)
			if err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, `UPDATE rounds SET participants = ? WHERE experiment_id = ? AND round = 0`, list, id); err != nil {
				return err
			}
		}
		now := nanos(db.now())
		for _, name := range envoys {
			if _, err := tx.ExecContext(ctx, `INSERT INTO experiment_envoys (experiment_id, envoy, status, round, updated_at)
				VALUES (?, ?, ?, 0, ?)`, id, name, api.EnvoyAssigned, now); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return Experiment{}, fmt.Errorf("start experiment %s: %w", id, err)
	}
	return out, nil
}

// EndExperiment moves experiment id from pending or in_progress to a terminal
// status, and every participant that has not ended with it. Terminal states
// are final: ending an ended experiment is api.ErrConflict.
func (db *DB) EndExperiment(ctx context.Context, id string, status api.JobStatus, reason string) (Experiment, error) {
	if !status.Terminal() {
		return Experiment{}, fmt.Errorf("end experiment %s: %q is not a terminal status", id, status)
	}
	envoyStatus := map[api.JobStatus]api.EnvoyState{api.JobFinished: api.EnvoyFinished, api.JobFailed: api.EnvoyFailed, api.JobAborted: api.EnvoyAborted, api.JobRejected: api.EnvoyAborted}[status]
	var out Experiment
	err := db.inTx(ctx, func(tx *dbTx) error {
		var err error
		out, err = setStatusTx(ctx, tx, db.now().UTC(), id, []api.JobStatus{api.JobPending, api.JobInProgress}, status, reason)
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE experiment_envoys SET status = ?, updated_at = ?
			WHERE experiment_id = ? AND status NOT IN (?, ?, ?, ?)`,
			envoyStatus, nanos(db.now()), id, api.EnvoyFinished, api.EnvoyFailed, api.EnvoyAborted, api.EnvoyRefused)
		return err
	})
	if err != nil {
		return Experiment{}, fmt.Errorf("end experiment %s: %w", id, err)
	}
	return out, nil
}

// SetEnvoyState records a participant's state. An envoy that has ended
// (finished, failed, aborted) keeps that state: api.ErrConflict.
func (db *DB) SetEnvoyState(ctx context.Context, id, envoy string, status api.EnvoyState, round int, reason string) error {
	var n int64
	err := db.inTx(ctx, func(tx *dbTx) error {
		res, err := tx.ExecContext(ctx, `UPDATE experiment_envoys SET status = ?, round = ?, reason = ?, updated_at = ?
			WHERE experiment_id = ? AND envoy = ? AND status NOT IN (?, ?, ?, ?)`,
			status, round, reason, nanos(db.now()), id, envoy, api.EnvoyFinished, api.EnvoyFailed, api.EnvoyAborted, api.EnvoyRefused)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return fmt.Errorf("set state of %s in experiment %s: %w", envoy, id, err)
	}
	if n == 0 {
		return fmt.Errorf("envoy %s in experiment %s: %w", envoy, id, api.ErrConflict)
	}
	return nil
}

// ExperimentEnvoys returns the participants of experiment id, by name.
func (db *DB) ExperimentEnvoys(ctx context.Context, id string) ([]ExperimentEnvoy, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT experiment_id, envoy, status, round, reason, updated_at
		FROM experiment_envoys WHERE experiment_id = ? ORDER BY envoy`, id)
	if err != nil {
		return nil, fmt.Errorf("participants of %s: %w", id, err)
	}
	defer rows.Close()
	var out []ExperimentEnvoy
	for rows.Next() {
		var e ExperimentEnvoy
		var updated int64
		if err := rows.Scan(&e.ExperimentID, &e.Envoy, &e.Status, &e.Round, &e.Reason, &updated); err != nil {
			return nil, fmt.Errorf("participants of %s: %w", id, err)
		}
		e.UpdatedAt = fromNanos(updated)
		out = append(out, e)
	}
	return out, rows.Err()
}

// LatestAssignments returns, per envoy, the experiment it was most recently
// made a participant of, so a restarted director knows what each envoy runs.
func (db *DB) LatestAssignments(ctx context.Context) (map[string]string, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT ee.envoy, ee.experiment_id FROM experiment_envoys ee
		JOIN experiments e ON e.id = ee.experiment_id ORDER BY e.started_at, e.id`)
	if err != nil {
		return nil, fmt.Errorf("latest assignments: %w", err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var envoy, id string
		if err := rows.Scan(&envoy, &id); err != nil {
			return nil, fmt.Errorf("latest assignments: %w", err)
		}
		out[envoy] = id // later rows win
	}
	return out, rows.Err()
}

// RecordTaskResult stores an envoy's report for a round with its metrics and
// marks the envoy reported, in one transaction. A second report for the same
// round is api.ErrAlreadyExists: results are never counted twice.
func (db *DB) RecordTaskResult(ctx context.Context, r TaskResult, metrics []Metric) error {
	now := db.now()
	if r.ReceivedAt.IsZero() {
		r.ReceivedAt = now
	}
	err := db.inTx(ctx, func(tx *dbTx) error {
		status, err := lockExperiment(ctx, tx, r.ExperimentID)
		if err != nil {
			return err
		}
		if status != api.JobInProgress {
			return fmt.Errorf("experiment %s is %s: %w", r.ExperimentID, status, api.ErrConflict)
		}
		var exists int
		if err := tx.QueryRowContext(ctx, `SELECT COUNT(*) FROM task_results WHERE experiment_id = ? AND round = ? AND envoy = ?`,
			r.ExperimentID, r.Round, r.Envoy).Scan(&exists); err != nil {
			return err
		}
		if exists > 0 {
			return fmt.Errorf("%s already reported round %d: %w", r.Envoy, r.Round, api.ErrAlreadyExists)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO task_results (experiment_id, round, envoy, data_size, result_path, received_at)
			VALUES (?, ?, ?, ?, ?, ?)`, r.ExperimentID, r.Round, r.Envoy, r.DataSize, r.ResultPath, nanos(r.ReceivedAt)); err != nil {
			return err
		}
		if err := insertMetricsTx(ctx, tx, metrics, now); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE experiment_envoys SET status = ?, round = ?, updated_at = ?
			WHERE experiment_id = ? AND envoy = ? AND status NOT IN (?, ?, ?, ?)`,
			api.EnvoyReported, r.Round, nanos(now), r.ExperimentID, r.Envoy, api.EnvoyFinished, api.EnvoyFailed, api.EnvoyAborted, api.EnvoyRefused)
		return err
	})
	if err != nil {
		return fmt.Errorf("record result of %s for round %d of %s: %w", r.Envoy, r.Round, r.ExperimentID, err)
	}
	return nil
}

// TaskResults returns the reports of one round, by envoy.
func (db *DB) TaskResults(ctx context.Context, id string, round int) ([]TaskResult, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT experiment_id, round, envoy, data_size, result_path, received_at
		FROM task_results WHERE experiment_id = ? AND round = ? ORDER BY envoy`, id, round)
	if err != nil {
		return nil, fmt.Errorf("task results of %s round %d: %w", id, round, err)
	}
	defer rows.Close()
	var out []TaskResult
	for rows.Next() {
		var r TaskResult
		var received int64
		if err := rows.Scan(&r.ExperimentID, &r.Round, &r.Envoy, &r.DataSize, &r.ResultPath, &received); err != nil {
			return nil, fmt.Errorf("task results of %s round %d: %w", id, round, err)
		}
		r.ReceivedAt = fromNanos(received)
		out = append(out, r)
	}
	return out, rows.Err()
}

// CompleteRound records next, the aggregated model (and the server state
// written with it), and the aggregator's
// metrics of the round before it, in one transaction. With final set the
// experiment is finished too (unless it has already ended: api.ErrConflict).
// Participants go back to training for the next round, or finish.
func (db *DB) CompleteRound(ctx context.Context, next Round, metrics []Metric, final bool) error {
	now := db.now()
	err := db.inTx(ctx, func(tx *dbTx) error {
		status, err := lockExperiment(ctx, tx, next.ExperimentID)
		if err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return fmt.Errorf("experiment %s: %w", next.ExperimentID, api.ErrNotFound)
			}
			return err
		}
		if status != api.JobInProgress {
			return fmt.Errorf("experiment %s is %s: %w", next.ExperimentID, status, api.ErrConflict)
		}
		if err := insertRoundTx(ctx, tx, next, nanos(now)); err != nil {
			return err
		}
		if err := insertMetricsTx(ctx, tx, metrics, now); err != nil {
			return err
		}
		envoyStatus := api.EnvoyAssigned
		if final {
			envoyStatus = api.EnvoyFinished
			if _, err := setStatusTx(ctx, tx, now.UTC(), next.ExperimentID, []api.JobStatus{api.JobInProgress}, api.JobFinished, ""); err != nil {
				return err
			}
		}
		_, err = tx.ExecContext(ctx, `UPDATE experiment_envoys SET status = ?, round = ?, updated_at = ?
			WHERE experiment_id = ? AND status NOT IN (?, ?, ?, ?)`,
			envoyStatus, next.Round, nanos(now), next.ExperimentID, api.EnvoyFinished, api.EnvoyFailed, api.EnvoyAborted, api.EnvoyRefused)
		return err
	})
	if err != nil {
		return fmt.Errorf("complete round %d of %s: %w", next.Round-1, next.ExperimentID, err)
	}
	return nil
}

// Rounds returns the rounds of experiment id in order.
func (db *DB) Rounds(ctx context.Context, id string) ([]Round, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT experiment_id, round, model_path, model_sha256, state_path, state_sha256, created_at, participants, pruned_at
		FROM rounds WHERE experiment_id = ? ORDER BY round`, id)
	if err != nil {
		return nil, fmt.Errorf("rounds of %s: %w", id, err)
	}
	defer rows.Close()
	var out []Round
	for rows.Next() {
		var r Round
		var created, pruned int64
		var participants string
		if err := rows.Scan(&r.ExperimentID, &r.Round, &r.ModelPath, &r.ModelSHA256, &r.StatePath, &r.StateSHA256, &created, &participants, &pruned); err != nil {
			return nil, fmt.Errorf("rounds of %s: %w", id, err)
		}
		if participants != "" {
			if err := json.Unmarshal([]byte(participants), &r.Participants); err != nil {
				return nil, fmt.Errorf("rounds of %s: round %d's participants: %w", id, r.Round, err)
			}
		}
		r.CreatedAt, r.PrunedAt = fromNanos(created), fromNanos(pruned)
		out = append(out, r)
	}
	return out, rows.Err()
}

// Metrics returns experiment id's metrics in round and time order.
func (db *DB) Metrics(ctx context.Context, id string) ([]Metric, error) {
	return db.MetricsAfter(ctx, id, 0)
}

// MetricsAfter returns experiment id's metrics stored after the one with
// sequence number seq, in the order they were stored.
func (db *DB) MetricsAfter(ctx context.Context, id string, seq int64) ([]Metric, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT rowid, experiment_id, round, origin, task, name, value, time
		FROM metrics WHERE experiment_id = ? AND rowid > ? ORDER BY rowid`, id, seq)
	if err != nil {
		return nil, fmt.Errorf("metrics of %s: %w", id, err)
	}
	defer rows.Close()
	var out []Metric
	for rows.Next() {
		var m Metric
		var t int64
		if err := rows.Scan(&m.Seq, &m.ExperimentID, &m.Round, &m.Origin, &m.Task, &m.Name, &m.Value, &t); err != nil {
			return nil, fmt.Errorf("metrics of %s: %w", id, err)
		}
		m.Time = fromNanos(t)
		out = append(out, m)
	}
	return out, rows.Err()
}

func insertRoundTx(ctx context.Context, tx *dbTx, r Round, now int64) error {
	participants := ""
	if r.Participants != nil {
		var err error
		if participants, err = marshalNames(r.Participants); err != nil {
			return err
		}
	}
	_, err := tx.ExecContext(ctx, `INSERT INTO rounds (experiment_id, round, model_path, model_sha256, state_path, state_sha256, created_at, participants)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, r.ExperimentID, r.Round, r.ModelPath, r.ModelSHA256, r.StatePath, r.StateSHA256, now, participants)
	return err
}

// marshalNames is a list of names as a column holds it: JSON.
func marshalNames(names []string) (string, error) {
	if names == nil {
		names = []string{}
	}
	b, err := json.Marshal(names)
	return string(b), err
}

func insertMetricsTx(ctx context.Context, tx *dbTx, metrics []Metric, now time.Time) error {
	for _, m := range metrics {
		if m.Time.IsZero() {
			m.Time = now
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO metrics (experiment_id, round, origin, task, name, value, time)
			VALUES (?, ?, ?, ?, ?, ?, ?)`, m.ExperimentID, m.Round, m.Origin, m.Task, m.Name, m.Value, nanos(m.Time)); err != nil {
			return err
		}
	}
	return nil
}

// RecordMetrics stores metrics of a running experiment that come with no
// task result of their own: an OpenFL validation task's report.
func (db *DB) RecordMetrics(ctx context.Context, id string, metrics []Metric) error {
	now := db.now()
	err := db.inTx(ctx, func(tx *dbTx) error {
		status, err := lockExperiment(ctx, tx, id)
		if err != nil {
			return err
		}
		if status != api.JobInProgress {
			return fmt.Errorf("experiment %s is %s: %w", id, status, api.ErrConflict)
		}
		return insertMetricsTx(ctx, tx, metrics, now)
	})
	if err != nil {
		return fmt.Errorf("record metrics of %s: %w", id, err)
	}
	return nil
}
