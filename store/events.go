package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/fedplane/fedplane/api"
)

// AppendJournal stores events and audit records in one transaction, and
// sets the Seq (and, where zero, the Time) of each. The director batches
// them so that a busy federation pays one commit for many.
func (db *DB) AppendJournal(ctx context.Context, events []*api.Event, audit []*api.AuditRecord) error {
	now := db.now()
	err := db.inTx(ctx, func(tx *dbTx) error {
		for _, e := range events {
			if e.Time.IsZero() {
				e.Time = now
			}
			metrics := ""
			if len(e.Metrics) > 0 {
				b, err := json.Marshal(e.Metrics)
				if err != nil {
					return fmt.Errorf("event metrics: %w", err)
				}
				metrics = string(b)
			}
			err := tx.QueryRowContext(ctx, `INSERT INTO events (time, kind, job, job_name, envoy, round, message, metrics)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq`,
				nanos(e.Time), string(e.Kind), e.Job, e.JobName, e.Envoy, e.Round, e.Message, metrics).Scan(&e.Seq)
			if err != nil {
				return err
			}
		}
		for _, a := range audit {
			if a.Time.IsZero() {
				a.Time = now
			}
			err := tx.QueryRowContext(ctx, `INSERT INTO audit (time, caller, org, kind, role, remote, channel, action, target, outcome, detail)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq`,
				nanos(a.Time), a.Caller, a.Org, a.Kind, a.Role, a.Remote, a.Channel, a.Action, a.Target, a.Outcome, a.Detail).Scan(&a.Seq)
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("append %d events and %d audit records: %w", len(events), len(audit), err)
	}
	return nil
}

// EventFilter selects events: those after sequence number After, of job
// Job when set (an exact id), at most Max (all when 0).
type EventFilter struct {
	After int64
	Job   string
	Max   int
}

// Events returns the events f selects, oldest first.
func (db *DB) Events(ctx context.Context, f EventFilter) ([]api.Event, error) {
	q := `SELECT seq, time, kind, job, job_name, envoy, round, message, metrics FROM events WHERE seq > ?`
	args := []any{f.After}
	if f.Job != "" {
		q += ` AND job = ?`
		args = append(args, f.Job)
	}
	q += ` ORDER BY seq`
	if f.Max > 0 {
		q += ` LIMIT ?`
		args = append(args, f.Max)
	}
	rows, err := db.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("events: %w", err)
	}
	defer rows.Close()
	var out []api.Event
	for rows.Next() {
		var e api.Event
		var t int64
		var kind, metrics string
		if err := rows.Scan(&e.Seq, &t, &kind, &e.Job, &e.JobName, &e.Envoy, &e.Round, &e.Message, &metrics); err != nil {
			return nil, fmt.Errorf("events: %w", err)
		}
		e.Time, e.Kind = fromNanos(t), api.EventKind(kind)
		if metrics != "" {
			if err := json.Unmarshal([]byte(metrics), &e.Metrics); err != nil {
				return nil, fmt.Errorf("event %d: metrics: %w", e.Seq, err)
			}
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// LastEventSeq returns the sequence number of the newest event, 0 when
// there is none.
func (db *DB) LastEventSeq(ctx context.Context) (int64, error) {
	var seq sql.NullInt64
	if err := db.r.QueryRowContext(ctx, `SELECT MAX(seq) FROM events`).Scan(&seq); err != nil {
		return 0, fmt.Errorf("last event: %w", err)
	}
	return seq.Int64, nil
}

// PruneEvents deletes all but the newest keep events and returns how many
// it deleted. Sequence numbers are never reused (AUTOINCREMENT), so a
// follower's After stays meaningful across a prune.
func (db *DB) PruneEvents(ctx context.Context, keep int) (int64, error) {
	var n int64
	err := db.inTx(ctx, func(tx *dbTx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM events WHERE seq <= (SELECT MAX(seq) FROM events) - ?`, keep)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("prune events: %w", err)
	}
	return n, nil
}

// AuditFilter selects audit records: those after sequence number After,
// at or after Since when not zero, of callers named Caller when set, at
// most Max (all when 0).
type AuditFilter struct {
	After  int64
	Since  time.Time
	Caller string
	Max    int
}

// Audit returns the audit records f selects, oldest first.
func (db *DB) Audit(ctx context.Context, f AuditFilter) ([]api.AuditRecord, error) {
	var where []string
	var args []any
	where = append(where, `seq > ?`)
	args = append(args, f.After)
	if !f.Since.IsZero() {
		where = append(where, `time >= ?`)
		args = append(args, nanos(f.Since))
	}
	if f.Caller != "" {
		where = append(where, `caller = ?`)
		args = append(args, f.Caller)
	}
	q := `SELECT seq, time, caller, org, kind, role, remote, channel, action, target, outcome, detail FROM audit WHERE ` +
		strings.Join(where, " AND ") + ` ORDER BY seq`
	if f.Max > 0 {
		q += ` LIMIT ?`
		args = append(args, f.Max)
	}
	rows, err := db.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	defer rows.Close()
	var out []api.AuditRecord
	for rows.Next() {
		var a api.AuditRecord
		var t int64
		if err := rows.Scan(&a.Seq, &t, &a.Caller, &a.Org, &a.Kind, &a.Role, &a.Remote, &a.Channel, &a.Action, &a.Target, &a.Outcome, &a.Detail); err != nil {
			return nil, fmt.Errorf("audit: %w", err)
		}
		a.Time = fromNanos(t)
		out = append(out, a)
	}
	return out, rows.Err()
}
