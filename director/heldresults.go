package director

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/director/metrics"
	"github.com/fedplane/fedplane/job"
	"github.com/fedplane/fedplane/tensor"
)

// This file keeps the task results of an envoy that were cut by the network
// part way (README "Transfers that resume"). An envoy that sends
// api.MDUploadID and the others with SendLocalTaskResults may resume its
// stream from the byte the director holds, which ResultsOffset tells. The
// checks of the stream's header (who sends, for which round) are made on
// the first attempt, before a byte is stored, and recorded with the
// partial; a resumed attempt is checked against them, and the whole file's
// sha256 against the one announced before the results are read as today.
// OpenFL envoys send no upload id: their streams are taken whole, as ever.
//
// A stream cut before its first 64 KiB have arrived keeps what did, once
// those bytes hold the whole header (the fields before the first tensor,
// which the checks need): the smallest prefix that resumes is the header
// and the first tensor's tag, as the stream's messages deliver them (the
// envoy sends its first ones small: envoy/results.go). A cut before that
// keeps nothing, and the envoy starts over.
//
// A partial survives a restart: its file is under the data dir's
// partials/ with a sidecar that records the checks' outcome and the bytes
// held, written after each cut (partials.go); start-up reloads it with
// the same bounds.
//
// Bounds: one partial per envoy (a new upload of the envoy drops its old
// one), each within the temp space for results it reserved when it began
// (MaxResultsInFlight bounds them all), and each dropped after
// heldResultsTTL unused, when its round closes or its experiment ends.

// heldResultsTTL drops a partial results upload nobody resumed for this long.
const heldResultsTTL = time.Hour

// heldWait bounds how long ResultsOffset waits for the connection still
// appending to an upload: after a cut the director may still be reading
// what the network had delivered.
const heldWait = 10 * time.Second

// ResultsResume is the request metadata of a resumable results stream.
type ResultsResume struct {
	// ID is the upload's id: 32 lowercase hex digits, new per round's
	// results.
	ID string
	// Offset is where the stream's bytes begin in the whole results: 0
	// at first, the held bytes on a resume.
	Offset int64
	// Size and SHA256 describe the whole serialized results.
	Size   int64
	SHA256 string
}

// Check checks m as envoys make it.
func (m ResultsResume) Check() error {
	if !isHex(m.ID, 32) {
		return fmt.Errorf("%w: %s %q: want 32 lowercase hex digits", api.ErrInvalid, api.MDUploadID, m.ID)
	}
	if !isHex(m.SHA256, 64) {
		return fmt.Errorf("%w: %s %q: want 64 lowercase hex digits", api.ErrInvalid, api.MDSHA256, m.SHA256)
	}
	// offset == size: every byte arrived but the reply did not; the
	// stream is empty.
	if m.Size <= 0 || m.Offset < 0 || m.Offset > m.Size {
		return fmt.Errorf("%w: %s %d with %s %d: want 0 <= offset <= size", api.ErrInvalid, api.MDOffset, m.Offset, api.MDSize, m.Size)
	}
	return nil
}

func isHex(s string, n int) bool {
	if len(s) != n {
		return false
	}
	for i := range len(s) {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// ErrWrongOffset refuses a resumed stream that does not start at the byte
// the director holds; Held says where it should.
type ErrWrongOffset struct{ Held, Offset int64 }

func (e *ErrWrongOffset) Error() string {
	return fmt.Sprintf("task results resume at byte %d, but the director holds %d: send from %d", e.Offset, e.Held, e.Held)
}

func (e *ErrWrongOffset) Unwrap() error { return api.ErrConflict }

// heldResults is one envoy's partial task results.
type heldResults struct {
	id         string
	envoy, exp string
	round      int
	size       int64
	sum        string
	// hdr is the results' header, as checked on the first attempt.
	hdr  tensor.TaskResultsHeader
	f    *os.File // under partials/ (partials.go)
	held int64
	// hw hashes the first hashed bytes of f as they arrive (see
	// Partial.hw); nil for a part loaded after a restart.
	hw      *job.HashWriter
	hashed  int64
	release func() // the temp space reserved for it
	busy    bool
	idle    chan struct{} // closed when the attempt that made it busy is done
	created time.Time
	last    time.Time
}

// discard removes u's file and its sidecar, and returns its temp space.
func (u *heldResults) discard() {
	if u.f != nil {
		removePart(u.f)
		u.f = nil
	}
	u.close()
}

// close closes u's file, if still open, and returns its temp space: the
// file and its sidecar stay for the next start.
func (u *heldResults) close() {
	u.stopHash()
	if u.f != nil {
		u.f.Close()
		u.f = nil
	}
	if u.release != nil {
		u.release()
		u.release = nil
	}
}

// stopHash ends u's hashing goroutine, if it runs.
func (u *heldResults) stopHash() {
	if u.hw != nil {
		u.hw.Close()
		u.hw = nil
	}
}

// save makes the bytes u holds durable with what the first attempt
// checked, for a resume after a restart.
func (u *heldResults) save() error {
	h := u.hdr
	return savePart(u.f, partialMeta{Kind: partialResults, ID: u.id, Owner: u.envoy, Size: u.size, SHA256: u.sum,
		Held: u.held, Created: u.created, Last: time.Now(), Experiment: u.exp, Round: u.round, Header: &h})
}

// heldTable is the director's partial results, by upload id.
type heldTable struct {
	mu   sync.Mutex
	byID map[string]*heldResults
}

// begin adds u, busy, dropping any partial of u's envoy (at most one per
// envoy), or refuses an id that is another envoy's or being sent.
func (t *heldTable) begin(u *heldResults) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byID == nil {
		t.byID = map[string]*heldResults{}
	}
	if o, ok := t.byID[u.id]; ok && (o.envoy != u.envoy || o.busy) {
		return fmt.Errorf("%w: task results upload %s is another's or being sent; choose a new id", api.ErrConflict, u.id)
	}
	for id, o := range t.byID {
		if (o.envoy == u.envoy || id == u.id) && !o.busy {
			o.discard()
			delete(t.byID, id)
		}
	}
	u.busy, u.idle, u.last = true, make(chan struct{}), time.Now()
	t.byID[u.id] = u
	return nil
}

// lookup returns the envoy upload id is of, so its identity can be checked
// before anything else is.
func (t *heldTable) lookup(id string) (envoy string, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	u, ok := t.byID[id]
	if !ok || time.Since(u.last) >= heldResultsTTL && !u.busy {
		return "", fmt.Errorf("%w: no task results upload %s is held (it finished, failed, or expired after %s); send it from the start", api.ErrNotFound, id, heldResultsTTL)
	}
	return u.envoy, nil
}

// take marks envoy's upload id busy for appending from m.Offset.
func (t *heldTable) take(envoy string, m ResultsResume) (*heldResults, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	u, ok := t.byID[m.ID]
	switch {
	case !ok || u.envoy != envoy:
		return nil, fmt.Errorf("%w: no task results upload %s is held; send it from the start", api.ErrNotFound, m.ID)
	case u.busy:
		return nil, fmt.Errorf("%w: task results upload %s is being sent on another connection", api.ErrBusy, m.ID)
	case u.size != m.Size || u.sum != m.SHA256:
		return nil, fmt.Errorf("%w: task results upload %s began as %d bytes of sha256 %s, not %d of %s", api.ErrConflict, m.ID, u.size, u.sum, m.Size, m.SHA256)
	case u.held != m.Offset:
		return nil, &ErrWrongOffset{Held: u.held, Offset: m.Offset}
	}
	u.busy, u.idle, u.last = true, make(chan struct{}), time.Now()
	return u, nil
}

// put hands back a busy upload after a failed attempt: kept for a resume
// when keep and it holds bytes, dropped otherwise.
func (t *heldTable) put(u *heldResults, keep bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	u.busy, u.last = false, time.Now()
	close(u.idle)
	if !keep || u.held == 0 {
		u.discard()
		if t.byID[u.id] == u {
			delete(t.byID, u.id)
		}
	}
}

// restore adds u, reloaded at start-up and not busy, unless the table
// holds a partial of u's envoy used later (at most one per envoy): the one
// not kept is discarded.
func (t *heldTable) restore(u *heldResults) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.byID == nil {
		t.byID = map[string]*heldResults{}
	}
	for id, o := range t.byID {
		if o.envoy == u.envoy || id == u.id {
			if !o.last.Before(u.last) {
				u.discard()
				return
			}
			o.discard()
			delete(t.byID, id)
		}
	}
	u.idle = make(chan struct{})
	close(u.idle)
	t.byID[u.id] = u
}

// finish removes a busy upload that holds all its bytes from the table;
// the caller owns its file and its temp space.
func (t *heldTable) finish(u *heldResults) {
	t.mu.Lock()
	defer t.mu.Unlock()
	close(u.idle)
	if t.byID[u.id] == u {
		delete(t.byID, u.id)
	}
}

// heldBytes returns how many bytes upload id of envoy holds once no attempt
// appends to it (waiting up to heldWait, or until ctx ends).
func (t *heldTable) heldBytes(ctx context.Context, id, envoy string) (int64, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	u, ok := t.byID[id]
	if ok && u.envoy == envoy && u.busy {
		WaitUnlocked(ctx, &t.mu, u.idle, heldWait)
		u, ok = t.byID[id]
	}
	switch {
	case !ok || u.envoy != envoy:
		return 0, fmt.Errorf("%w: no task results upload %s is held (it finished, failed, or expired after %s); send it from the start", api.ErrNotFound, id, heldResultsTTL)
	case u.busy:
		return 0, fmt.Errorf("%w: task results upload %s is being sent on another connection", api.ErrBusy, id)
	}
	return u.held, nil
}

// sweep drops the partials that are not being sent and that stale says
// are of no use any more, or that nobody resumed for heldResultsTTL.
func (t *heldTable) sweep(stale func(u *heldResults) bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id, u := range t.byID {
		if !u.busy && (time.Since(u.last) >= heldResultsTTL || stale(u)) {
			u.discard()
			delete(t.byID, id)
		}
	}
}

// staleResults reports whether u's round has closed or its experiment ended.
func (d *Director) staleResults(u *heldResults) bool {
	exp := d.runningExperiment(u.exp)
	if exp == nil {
		return true
	}
	exp.mu.Lock()
	defer exp.mu.Unlock()
	return exp.round != u.round || exp.reported[u.envoy]
}

// sweepHeldResults drops partial results of closed rounds, ended
// experiments and those unused for heldResultsTTL.
func (d *Director) sweepHeldResults() { d.heldRes.sweep(d.staleResults) }

// closeHeldResults closes the files of the partials not being sent, when
// the director stops; they stay on disk, with what their last cut
// recorded, for the next start (loadHeldResults).
func (d *Director) closeHeldResults() {
	t := &d.heldRes
	t.mu.Lock()
	defer t.mu.Unlock()
	for id, u := range t.byID {
		if !u.busy {
			u.close()
			delete(t.byID, id)
		}
	}
}

// loadHeldResults takes back, at start-up once the running experiments
// are loaded, the partial results an earlier run kept: each is checked
// again against its experiment (still running, the round the same and not
// reported, the size within what the model allows) and reserves its temp
// space, or is removed, as are those unused for heldResultsTTL.
func (d *Director) loadHeldResults() {
	for _, h := range loadParts(d.log, d.cfg.DataDir, partialResults, d.cfg.MaxJobSize, heldResultsTTL, time.Now()) {
		m := h.meta
		u := &heldResults{id: m.ID, envoy: m.Owner, exp: m.Experiment, round: m.Round, size: m.Size, sum: m.SHA256,
			hdr: *m.Header, f: h.f, held: m.Held, created: m.Created, last: m.Last}
		err := d.checkReloaded(u)
		if err == nil {
			u.release, err = d.reserveResults(u.size)
		}
		if err != nil {
			d.log.Info("partial task results dropped at start", api.LogEnvoy, u.envoy, api.LogJob, u.exp, api.LogRound, u.round, api.LogErr, err)
			u.discard()
			continue
		}
		d.log.Info("partial task results held for a resume", api.LogEnvoy, u.envoy, api.LogJob, u.exp, api.LogRound, u.round, api.LogBytes, u.held)
		d.heldRes.restore(u)
	}
}

// checkReloaded checks a reloaded partial against its experiment as it is
// now.
func (d *Director) checkReloaded(u *heldResults) error {
	if d.staleResults(u) {
		return fmt.Errorf("%w: its round closed or its experiment ended", api.ErrConflict)
	}
	exp := d.runningExperiment(u.exp)
	exp.modelMu.RLock()
	var most int64
	if exp.model != nil {
		most = min(tensor.MaxTaskResultsSize(exp.model.x), d.cfg.MaxJobSize)
	}
	exp.modelMu.RUnlock()
	if u.size > most {
		return fmt.Errorf("%w: task results of %d bytes, the model allows at most %d", api.ErrTooLarge, u.size, most)
	}
	return nil
}

// ResultsOffset returns how many bytes of task results upload id the
// director holds. verify, if not nil, is asked whether the caller may act
// as the envoy the upload is of.
func (d *Director) ResultsOffset(ctx context.Context, id string, verify func(envoy string) error) (int64, error) {
	if !isHex(id, 32) {
		return 0, fmt.Errorf("%w: upload id %q: want 32 lowercase hex digits", api.ErrInvalid, id)
	}
	d.sweepHeldResults()
	envoy, err := d.heldRes.lookup(id)
	if err != nil {
		return 0, err
	}
	if verify != nil {
		if err := verify(envoy); err != nil {
			return 0, err
		}
	}
	return d.heldRes.heldBytes(ctx, id, envoy)
}

// appendResults appends to u what r holds, then prefix's bytes first when
// not nil, up to u's size in all. Held counts what reached the file even
// when r fails part way. It reports whether a failure leaves u worth
// keeping: a cut is, a refusal is not.
func (d *Director) appendResults(u *heldResults, prefix []byte, r io.Reader) (keep bool, err error) {
	if _, err := u.f.Seek(u.held, io.SeekStart); err != nil {
		return false, fmt.Errorf("resume task results: %w", err)
	}
	if u.hw == nil && u.held == 0 {
		u.hw = job.NewHashWriter(u.f)
	}
	var to io.Writer = u.f
	hashing := u.hw != nil && u.hashed == u.held
	if hashing {
		to = u.hw
	}
	cw := &countWriter{w: to}
	w := &capWriter{w: cw, left: u.size - u.held, what: fmt.Sprintf("task results larger than the %d bytes announced", u.size)}
	defer func() {
		if hashing {
			u.hashed += cw.n
		}
		u.held += cw.n
		d.metrics.Received(metrics.KindResults, cw.n)
	}()
	if _, err := w.Write(prefix); err != nil {
		return false, err
	}
	if _, err := io.Copy(w, r); err != nil {
		return !errors.Is(err, api.ErrTooLarge) && !errors.Is(err, api.ErrInvalid), err
	}
	if u.held+cw.n != u.size {
		return true, fmt.Errorf("%w: task results stream ended at byte %d of %d", api.ErrDataLoss, u.held+cw.n, u.size)
	}
	return false, nil
}

// checkHeld checks that u, which holds all its bytes, has the sha256
// announced, and leaves its file at the start.
func checkHeld(u *heldResults) error {
	var got string
	if u.hw != nil && u.hashed == u.size {
		u.hw.Close()
		got = u.hw.Sum()
	} else {
		h := sha256.New()
		if _, err := io.Copy(h, io.NewSectionReader(u.f, 0, u.size)); err != nil {
			return fmt.Errorf("read task results: %w", err)
		}
		got = hex.EncodeToString(h.Sum(nil))
	}
	u.stopHash()
	if got != u.sum {
		return fmt.Errorf("%w: the task results received have sha256 %s, the envoy announced %s", api.ErrDataLoss, got, u.sum)
	}
	return nil
}

// receiveHeld receives the stream of a resumable upload into u, which the
// caller made busy, and returns its file once it holds every byte and its
// sha256 matches. It owns u: u goes back to the table (kept for a resume
// after a cut) or is discarded, or, on success, out of the table with the
// file and temp space the caller's (release frees the latter).
func (d *Director) receiveHeld(u *heldResults, prefix []byte, r io.Reader) (tmp *os.File, release func(), err error) {
	keep, err := d.appendResults(u, prefix, r)
	if err != nil {
		if keep && u.held > 0 {
			if serr := u.save(); serr != nil {
				// Held until the director stops: a restart resumes
				// from what an earlier cut recorded, or starts over.
				d.log.Warn("partial task results: cannot record them for a restart", api.LogEnvoy, u.envoy, api.LogErr, serr)
			}
			d.log.Info("task results cut; held for a resume", api.LogEnvoy, u.envoy, api.LogJob, u.exp, api.LogRound, u.round, api.LogBytes, u.held, api.LogErr, err)
		}
		d.heldRes.put(u, keep)
		return nil, nil, err
	}
	// Complete: no longer held for a resume, whatever its checks say.
	forgetPart(u.f.Name())
	d.heldRes.finish(u)
	if err := checkHeld(u); err != nil {
		u.discard()
		return nil, nil, err
	}
	tmp, release = u.f, u.release
	u.f, u.release = nil, nil
	return tmp, release, nil
}

// resumeResults takes the rest of a resumed results stream: the upload's
// envoy must be the caller (verify), still a participant of the running
// experiment, the round still the current one and not reported; the
// stream must begin at the byte held.
func (d *Director) resumeResults(ctx context.Context, r io.Reader, verify func(envoy string) error, m ResultsResume) (Report, error) {
	d.sweepHeldResults()
	envoy, err := d.heldRes.lookup(m.ID)
	if err != nil {
		return Report{}, err
	}
	if verify != nil {
		if err := verify(envoy); err != nil {
			return Report{}, err
		}
	}
	u, err := d.heldRes.take(envoy, m)
	if err != nil {
		return Report{}, err
	}
	h := u.hdr
	rep := Report{Experiment: u.exp, Envoy: envoy, Round: u.round, Receiver: h.Receiver, CommonName: h.CommonName}
	d.log.InfoContext(ctx, "task results resumed", api.LogEnvoy, envoy, api.LogJob, u.exp, api.LogRound, u.round, api.LogBytes, u.held)
	exp, err := d.running(ctx, u.exp, envoy)
	if err == nil {
		err = exp.claimUpload(envoy, u.round)
	}
	if err != nil {
		d.heldRes.put(u, false)
		return rep, err
	}
	defer exp.doneUploading(envoy)
	tmp, release, err := d.receiveHeld(u, nil, r)
	if err != nil {
		return rep, err
	}
	defer release()
	return d.storeResults(ctx, exp, rep, h, tmp, u.size)
}

// WaitUnlocked releases mu, which the caller holds, until idle is closed,
// wait has passed or ctx ends, then takes mu again: how a table of held
// partial uploads waits for the attempt that still appends to one
// (heldTable here, the admin port's uploads).
func WaitUnlocked(ctx context.Context, mu *sync.Mutex, idle <-chan struct{}, wait time.Duration) {
	mu.Unlock()
	defer mu.Lock()
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-idle:
	case <-t.C:
	case <-ctx.Done():
	}
}
