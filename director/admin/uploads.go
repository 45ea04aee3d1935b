package admin

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/director"
)

// This file keeps the partial archives of resumable uploads (submit_job
// with api.MetaUploadID, README "Transfers that resume"). An upload cut by
// the network leaves what arrived in a temp file under the data dir; the
// same caller resumes it by id from the byte the director holds, which
// upload_status tells. A hostile caller could fill the disk with partial
// uploads it never finishes, so they are bounded: each by the director's
// max job size, a caller's by count, all by count, and each by a lifetime.
//
// A partial survives a restart: after each cut the director records its
// bytes and whose it is on disk (director.Partial.Keep), and the table
// takes back at its start what the last run kept, within the same bounds.

// Bounds of the partial uploads held.
const (
	// DefaultUploadTTL drops a partial upload nobody resumed for this long.
	DefaultUploadTTL = time.Hour
	// DefaultUploadsPerCaller caps one caller's partial uploads.
	DefaultUploadsPerCaller = 2
	// DefaultMaxUploads caps all partial uploads.
	DefaultMaxUploads = 16
)

// uploadIDLen is the length of an upload id: 32 lowercase hex digits, as
// the client makes from 16 random bytes.
const uploadIDLen = 32

// uploads is the table of partial uploads, by id.
type uploads struct {
	now       func() time.Time
	ttl       time.Duration
	perCaller int
	max       int

	mu   sync.Mutex
	byID map[string]*upload
}

// upload is one partial upload.
type upload struct {
	owner  string // sessionKey of the caller that began it
	caller string // callerKey, for the per-caller cap
	size   int64  // the whole archive's, as announced
	sum    string // its sha256, as announced
	p      *director.Partial
	busy   bool          // a request is appending to it
	idle   chan struct{} // closed when the request that made it busy is done
	last   time.Time
}

// newUploads makes the table with held, the partial uploads an earlier
// run kept: those within the bounds are held again, the most recently used
// first, and the rest discarded.
func newUploads(now func() time.Time, held []*director.Partial) *uploads {
	t := &uploads{now: now, ttl: DefaultUploadTTL, perCaller: DefaultUploadsPerCaller,
		max: DefaultMaxUploads, byID: map[string]*upload{}}
	slices.SortFunc(held, func(a, b *director.Partial) int { return b.Info().Last.Compare(a.Info().Last) })
	mine := map[string]int{}
	for _, p := range held {
		i := p.Info()
		_, dup := t.byID[i.ID]
		if dup || checkUploadID(i.ID) != nil || now().Sub(i.Last) >= t.ttl || mine[i.Caller] >= t.perCaller || len(t.byID) >= t.max {
			p.Discard()
			continue
		}
		mine[i.Caller]++
		idle := make(chan struct{})
		close(idle)
		t.byID[i.ID] = &upload{owner: i.Owner, caller: i.Caller, size: i.Size, sum: i.SHA256, p: p, idle: idle, last: i.Last}
	}
	return t
}

// checkUploadID checks that id is as clients make them.
func checkUploadID(id string) error {
	if len(id) != uploadIDLen {
		return fmt.Errorf("%w: %s %q: want %d lowercase hex digits", api.ErrInvalid, api.MetaUploadID, id, uploadIDLen)
	}
	for i := range len(id) {
		if c := id[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return fmt.Errorf("%w: %s %q: want %d lowercase hex digits", api.ErrInvalid, api.MetaUploadID, id, uploadIDLen)
		}
	}
	return nil
}

// errWrongOffset is the refusal of a resumed upload that does not start
// at the byte the director holds; held says where it should.
type errWrongOffset struct{ held, off int64 }

func (e *errWrongOffset) Error() string {
	return fmt.Sprintf("upload resumes at byte %d, but the director holds %d: send from %d", e.off, e.held, e.held)
}

func (e *errWrongOffset) Unwrap() error { return api.ErrConflict }

// take returns owner's upload id for appending from off, marked busy, or
// begins it when off is 0 and none of that id is held (newPartial makes
// its file). size and sum must be the ones it began with.
func (t *uploads) take(id, owner, caller string, size int64, sum string, off int64, newPartial func(director.UploadInfo) (*director.Partial, error)) (*upload, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expireLocked()
	u, ok := t.byID[id]
	switch {
	case ok && u.owner != owner:
		return nil, fmt.Errorf("%w: upload %s is another caller's", api.ErrNotAllowed, id)
	case ok && u.busy:
		return nil, fmt.Errorf("%w: upload %s is being sent on another connection", api.ErrBusy, id)
	case ok && (u.size != size || u.sum != sum):
		return nil, fmt.Errorf("%w: upload %s began as %d bytes of sha256 %s, not %d of %s", api.ErrConflict, id, u.size, u.sum, size, sum)
	case ok && off != u.p.Held():
		return nil, &errWrongOffset{held: u.p.Held(), off: off}
	case !ok && off != 0:
		return nil, &errWrongOffset{held: 0, off: off}
	case ok:
		u.busy, u.idle, u.last = true, make(chan struct{}), t.now()
		return u, nil
	}
	mine := 0
	for _, o := range t.byID {
		if o.caller == caller {
			mine++
		}
	}
	switch {
	case mine >= t.perCaller:
		return nil, fmt.Errorf("%w: %d partial uploads of yours are held; resume one, or wait %s for it to expire", api.ErrBusy, mine, t.ttl)
	case len(t.byID) >= t.max:
		return nil, fmt.Errorf("%w: director holds %d partial uploads; try again later", api.ErrBusy, len(t.byID))
	}
	p, err := newPartial(director.UploadInfo{ID: id, Owner: owner, Caller: caller, Size: size, SHA256: sum, Created: t.now()})
	if err != nil {
		return nil, err
	}
	u = &upload{owner: owner, caller: caller, size: size, sum: sum, p: p, busy: true, idle: make(chan struct{}), last: t.now()}
	t.byID[id] = u
	return u, nil
}

// put hands back a busy upload: kept for a resume when keep and it holds
// bytes, dropped (its file removed) otherwise. A kept one is recorded on
// disk first, for a resume after a restart; the error says that failed
// (it is held until the director stops all the same).
func (t *uploads) put(id string, u *upload, keep bool) error {
	now := t.now()
	var err error
	if keep && u.p.Held() > 0 {
		err = u.p.Keep(now) // u is busy: this request's alone
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	u.busy, u.last = false, now
	close(u.idle)
	if !keep || u.p.Held() == 0 {
		u.p.Discard()
		delete(t.byID, id)
	}
	return err
}

// finish removes a busy upload from the table; the caller owns its
// partial.
func (t *uploads) finish(id string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	close(t.byID[id].idle)
	delete(t.byID, id)
}

// busyWait bounds how long upload_status waits for the connection that
// is still appending to an upload, as after a cut the director may still
// be reading what the network had delivered.
const busyWait = 10 * time.Second

// held returns how many bytes owner's upload id holds, once no request
// appends to it (waiting up to busyWait, or until ctx ends).
func (t *uploads) held(ctx context.Context, id, owner string) (int64, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expireLocked()
	u, ok := t.byID[id]
	if ok && u.owner == owner && u.busy {
		director.WaitUnlocked(ctx, &t.mu, u.idle, busyWait)
		u, ok = t.byID[id]
	}
	switch {
	case !ok || u.owner != owner:
		return 0, fmt.Errorf("%w: no upload %s of yours is held (it finished, failed, or expired after %s); send it from the start", api.ErrNotFound, id, t.ttl)
	case u.busy:
		return 0, fmt.Errorf("%w: upload %s is being sent on another connection", api.ErrBusy, id)
	}
	return u.p.Held(), nil
}

// sweep drops partial uploads unused for the TTL.
func (t *uploads) sweep() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expireLocked()
}

// closeAll closes every partial upload that is not being sent, when the
// server stops: each stays on disk as its last cut recorded it, for the
// next start.
func (t *uploads) closeAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id, u := range t.byID {
		if !u.busy {
			u.p.Close()
			delete(t.byID, id)
		}
	}
}

func (t *uploads) expireLocked() {
	now := t.now()
	for id, u := range t.byID {
		if !u.busy && now.Sub(u.last) >= t.ttl {
			u.p.Discard()
			delete(t.byID, id)
		}
	}
}
