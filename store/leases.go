package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// AcquireLease takes the lease called name for holder until ttl from now,
// if it is free, expired, or already holder's (a renewal), in one statement
// that concurrent callers, in this process or another, cannot interleave.
// held says whether holder has it now; epoch is then the lease's epoch,
// which grows by one each time the lease passes to another holder (and is
// 1 for its first), so that a holder can stamp its work and an old
// holder's late writes can be told apart. When held is false, epoch is 0.
//
// Expiry is judged on the clock of the DB (Options.Now): the directors
// sharing a lease must have clocks that agree to well within ttl.
func (db *DB) AcquireLease(ctx context.Context, name, holder string, ttl time.Duration) (held bool, epoch int64, err error) {
	if name == "" || holder == "" {
		return false, 0, fmt.Errorf("acquire lease %q for %q: empty name or holder", name, holder)
	}
	if ttl <= 0 {
		return false, 0, fmt.Errorf("acquire lease %q for %q: ttl %v must be positive", name, holder, ttl)
	}
	now := db.now().UnixMilli()
	// The WHERE of DO UPDATE leaves a lease another holder still has
	// untouched, and then RETURNING returns no row.
	err = db.w.QueryRowContext(ctx, `INSERT INTO leases (name, holder, epoch, expires_at) VALUES (?, ?, 1, ?)
		ON CONFLICT (name) DO UPDATE SET
			epoch = CASE WHEN leases.holder = excluded.holder THEN leases.epoch ELSE leases.epoch + 1 END,
			holder = excluded.holder,
			expires_at = excluded.expires_at
		WHERE leases.holder = excluded.holder OR leases.expires_at <= ?
		RETURNING epoch`, name, holder, now+ttl.Milliseconds(), now).Scan(&epoch)
	if errors.Is(err, sql.ErrNoRows) {
		return false, 0, nil
	}
	if err != nil {
		return false, 0, fmt.Errorf("acquire lease %q for %q: %w", name, holder, err)
	}
	return true, epoch, nil
}

// ReleaseLease gives up holder's lease called name, so another can take it
// at once rather than when it expires. It keeps the row, and so the epoch:
// the next holder's is still one more. Releasing a lease one does not hold
// does nothing.
func (db *DB) ReleaseLease(ctx context.Context, name, holder string) error {
	_, err := db.w.ExecContext(ctx, `UPDATE leases SET expires_at = 0 WHERE name = ? AND holder = ?`, name, holder)
	if err != nil {
		return fmt.Errorf("release lease %q of %q: %w", name, holder, err)
	}
	return nil
}
