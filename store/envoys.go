package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/fedplane/fedplane/api"
)

// Envoy is a registered data site as the store keeps it.
type Envoy struct {
	Name        string
	Description string
	NSamples    uint64
	SampleShape []string
	TargetShape []string
	// Devices is the envoy's accelerator list as JSON; the store does not read it.
	Devices           string
	RegisteredAt      time.Time
	UpdatedAt         time.Time // when the shard info last changed
	LastSeen          time.Time
	Online            bool // the last status written, not a liveness verdict
	ExperimentRunning bool
}

const envoyColumns = `name, description, n_samples, sample_shape, target_shape, devices,
	registered_at, updated_at, last_seen, online, experiment_running`

// UpsertEnvoy registers e, or updates the shard info of the envoy of that name.
// Either way the envoy is marked online and seen now; RegisteredAt is kept
// from the first registration. It returns the row as stored.
func (db *DB) UpsertEnvoy(ctx context.Context, e Envoy) (Envoy, error) {
	var out Envoy
	err := db.inTx(ctx, func(tx *dbTx) error {
		if err := upsertEnvoy(ctx, tx, e, nanos(db.now())); err != nil {
			return err
		}
		var err error
		out, err = scanEnvoy(tx.QueryRowContext(ctx, `SELECT `+envoyColumns+` FROM envoys WHERE name = ?`, e.Name))
		return err
	})
	if err != nil {
		return Envoy{}, fmt.Errorf("upsert envoy %q: %w", e.Name, err)
	}
	return out, nil
}

// UpsertEnvoys is UpsertEnvoy for many envoys in one transaction: an
// import of a federation's envoys, or a test's thousands, costs one commit.
// They are written in name order, as TouchEnvoys writes.
func (db *DB) UpsertEnvoys(ctx context.Context, envoys []Envoy) error {
	envoys = slices.SortedFunc(slices.Values(envoys), func(a, b Envoy) int { return strings.Compare(a.Name, b.Name) })
	now := nanos(db.now())
	err := db.inTx(ctx, func(tx *dbTx) error {
		for _, e := range envoys {
			if err := upsertEnvoy(ctx, tx, e, now); err != nil {
				return fmt.Errorf("envoy %q: %w", e.Name, err)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("upsert %d envoys: %w", len(envoys), err)
	}
	return nil
}

func upsertEnvoy(ctx context.Context, tx *dbTx, e Envoy, now int64) error {
	if e.Name == "" {
		return errors.New("empty name")
	}
	sample, err := marshalShape(e.SampleShape)
	if err != nil {
		return err
	}
	target, err := marshalShape(e.TargetShape)
	if err != nil {
		return err
	}
	if e.Devices == "" {
		e.Devices = "[]"
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO envoys (`+envoyColumns+`)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?)
		ON CONFLICT (name) DO UPDATE SET
			description = excluded.description,
			n_samples = excluded.n_samples,
			sample_shape = excluded.sample_shape,
			target_shape = excluded.target_shape,
			devices = excluded.devices,
			updated_at = excluded.updated_at,
			last_seen = excluded.last_seen,
			online = 1,
			experiment_running = excluded.experiment_running`,
		e.Name, e.Description, int64(e.NSamples), sample, target, e.Devices,
		now, now, now, e.ExperimentRunning)
	return err
}

// GetEnvoy returns the envoy of that name, or api.ErrNotFound.
func (db *DB) GetEnvoy(ctx context.Context, name string) (Envoy, error) {
	e, err := scanEnvoy(db.r.QueryRowContext(ctx, `SELECT `+envoyColumns+` FROM envoys WHERE name = ?`, name))
	if errors.Is(err, sql.ErrNoRows) {
		return Envoy{}, fmt.Errorf("envoy %q: %w", name, api.ErrNotFound)
	}
	if err != nil {
		return Envoy{}, fmt.Errorf("get envoy %q: %w", name, err)
	}
	return e, nil
}

// ListEnvoys returns every registered envoy, ordered by name.
func (db *DB) ListEnvoys(ctx context.Context) ([]Envoy, error) {
	rows, err := db.r.QueryContext(ctx, `SELECT `+envoyColumns+` FROM envoys ORDER BY name`)
	if err != nil {
		return nil, fmt.Errorf("list envoys: %w", err)
	}
	defer rows.Close()
	var out []Envoy
	for rows.Next() {
		e, err := scanEnvoy(rows)
		if err != nil {
			return nil, fmt.Errorf("list envoys: %w", err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list envoys: %w", err)
	}
	return out, nil
}

// DeleteEnvoy forgets the envoy of that name, or returns api.ErrNotFound.
// Its part in past experiments (experiment_envoys, task results, metrics)
// stays: that is the experiments' history.
func (db *DB) DeleteEnvoy(ctx context.Context, name string) error {
	var n int64
	err := db.inTx(ctx, func(tx *dbTx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM envoys WHERE name = ?`, name)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return fmt.Errorf("delete envoy %q: %w", name, err)
	}
	if n == 0 {
		return fmt.Errorf("envoy %q: %w", name, api.ErrNotFound)
	}
	return nil
}

// EnvoyStatus is a status change of one envoy.
type EnvoyStatus struct {
	Name              string
	Online            bool
	ExperimentRunning bool
	LastSeen          time.Time
}

// SetEnvoyStatus writes a status change at once. It returns api.ErrNotFound for an
// unknown envoy.
func (db *DB) SetEnvoyStatus(ctx context.Context, s EnvoyStatus) error {
	var n int64
	err := db.inTx(ctx, func(tx *dbTx) error {
		res, err := tx.ExecContext(ctx, `UPDATE envoys SET online = ?, experiment_running = ?,
			last_seen = `+tx.d.greatest()+`(last_seen, ?) WHERE name = ?`,
			s.Online, s.ExperimentRunning, nanos(s.LastSeen), s.Name)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	if err != nil {
		return fmt.Errorf("set status of envoy %q: %w", s.Name, err)
	}
	if n == 0 {
		return fmt.Errorf("envoy %q: %w", s.Name, api.ErrNotFound)
	}
	return nil
}

// TouchEnvoys records liveness for many envoys in one transaction: each
// envoy's last_seen becomes the later of the stored and the given time.
// Unknown names are skipped, since a batch may race with a deletion.
// Rows are locked in name order: two directors flushing envoys they both
// saw take them in the same order and cannot deadlock.
func (db *DB) TouchEnvoys(ctx context.Context, seen map[string]time.Time) error {
	if len(seen) == 0 {
		return nil
	}
	names := slices.Sorted(maps.Keys(seen))
	var err error
	if db.d.postgres {
		err = db.inTx(ctx, func(tx *dbTx) error { return touchEnvoysPostgres(ctx, tx, names, seen) })
	} else {
		err = db.inTx(ctx, func(tx *dbTx) error { return touchEnvoysSQLite(ctx, tx, names, seen) })
	}
	if err != nil {
		return fmt.Errorf("touch %d envoys: %w", len(seen), err)
	}
	return nil
}

// touchEnvoysSQLite writes one row per statement, each a cheap call into
// the library.
func touchEnvoysSQLite(ctx context.Context, tx *dbTx, names []string, seen map[string]time.Time) error {
	st, err := tx.PrepareContext(ctx, `UPDATE envoys SET last_seen = MAX(last_seen, ?) WHERE name = ?`)
	if err != nil {
		return err
	}
	defer st.Close()
	for _, name := range names {
		if _, err := st.ExecContext(ctx, nanos(seen[name]), name); err != nil {
			return err
		}
	}
	return nil
}

// touchEnvoysPostgres writes the batch with two statements, since a
// statement per row costs a round trip to the server per row (1.1 s for
// 5,000 rows on loopback). The first locks the rows in name order (ORDER
// BY before FOR UPDATE locks them as it returns them), the second updates
// them from arrays.
func touchEnvoysPostgres(ctx context.Context, tx *dbTx, names []string, seen map[string]time.Time) error {
	times := make([]int64, len(names))
	for i, name := range names {
		times[i] = nanos(seen[name])
	}
	if _, err := tx.ExecContext(ctx, `SELECT 1 FROM envoys WHERE name = ANY(?) ORDER BY name FOR UPDATE`, names); err != nil {
		return err
	}
	_, err := tx.ExecContext(ctx, `UPDATE envoys SET last_seen = GREATEST(envoys.last_seen, v.t)
		FROM unnest(?::text[], ?::bigint[]) AS v(name, t) WHERE envoys.name = v.name`, names, times)
	return err
}

// rowScanner is the part of *sql.Row and *sql.Rows that scanEnvoy needs.
type rowScanner interface{ Scan(dest ...any) error }

func scanEnvoy(s rowScanner) (Envoy, error) {
	var (
		e                            Envoy
		n                            int64
		sample, target               string
		registered, updated, lastSee int64
	)
	if err := s.Scan(&e.Name, &e.Description, &n, &sample, &target, &e.Devices,
		&registered, &updated, &lastSee, &e.Online, &e.ExperimentRunning); err != nil {
		return Envoy{}, err
	}
	e.NSamples = uint64(n)
	e.RegisteredAt, e.UpdatedAt, e.LastSeen = fromNanos(registered), fromNanos(updated), fromNanos(lastSee)
	if err := json.Unmarshal([]byte(sample), &e.SampleShape); err != nil {
		return Envoy{}, fmt.Errorf("envoy %q sample_shape: %w", e.Name, err)
	}
	if err := json.Unmarshal([]byte(target), &e.TargetShape); err != nil {
		return Envoy{}, fmt.Errorf("envoy %q target_shape: %w", e.Name, err)
	}
	return e, nil
}

func marshalShape(s []string) (string, error) {
	if s == nil {
		s = []string{}
	}
	b, err := json.Marshal(s)
	return string(b), err
}
