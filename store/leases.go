package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/fedplane/fedplane/api"
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

// ErrFenced refuses a write of a holder whose lease has passed on (Fence).
var ErrFenced = errors.New("this director no longer holds the coordinator lease")

// fence is the lease every write transaction checks.
type fence struct {
	name, holder string
	epoch        int64
}

// Fence makes every write transaction of db first check that holder still
// holds the lease called name at epoch, and fail with ErrFenced if not. On
// PostgreSQL the check share-locks the lease's row until the transaction
// ends, so the lease cannot pass to another holder while a write of this
// one is under way; on SQLite every write transaction holds the database's
// write lock, which AcquireLease needs too. A director replica whose
// process was paused past its lease can then change nothing once it wakes:
// the holder that took over has the only say.
func (db *DB) Fence(name, holder string, epoch int64) {
	db.fence.Store(&fence{name: name, holder: holder, epoch: epoch})
}

// checkFence is Fence's check, in tx.
func (db *DB) checkFence(ctx context.Context, tx *dbTx) error {
	f := db.fence.Load()
	if f == nil {
		return nil
	}
	var one int
	err := tx.QueryRowContext(ctx, `SELECT 1 FROM leases WHERE name = ? AND holder = ? AND epoch = ? AND expires_at > ?`+tx.d.forShare(),
		f.name, f.holder, f.epoch, db.now().UnixMilli()).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%w (lease %q, epoch %d): refusing to write", ErrFenced, f.name, f.epoch)
	}
	if err != nil {
		return fmt.Errorf("check lease %q: %w", f.name, err)
	}
	return nil
}

// Lease is a lease's row: who holds it, at which epoch, until when.
type Lease struct {
	Name      string
	Holder    string
	Epoch     int64
	ExpiresAt time.Time
}

// Held says whether the lease is held at now.
func (l Lease) Held(now time.Time) bool { return l.Holder != "" && now.Before(l.ExpiresAt) }

// GetLease returns the lease called name; api.ErrNotFound if no one ever
// took it.
func (db *DB) GetLease(ctx context.Context, name string) (Lease, error) {
	l := Lease{Name: name}
	var ms int64
	err := db.r.QueryRowContext(ctx, `SELECT holder, epoch, expires_at FROM leases WHERE name = ?`, name).Scan(&l.Holder, &l.Epoch, &ms)
	if errors.Is(err, sql.ErrNoRows) {
		return Lease{}, fmt.Errorf("lease %q: %w", name, api.ErrNotFound)
	}
	if err != nil {
		return Lease{}, fmt.Errorf("lease %q: %w", name, err)
	}
	l.ExpiresAt = time.UnixMilli(ms).UTC()
	return l, nil
}
