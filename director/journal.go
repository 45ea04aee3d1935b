package director

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/store"
)

// The journal is the director's event stream and audit trail on their way
// to the store. Whoever records an event or a call hands it over and moves
// on; one goroutine writes what has queued in one transaction (one fsync
// for many), then wakes the followers of the stream. A crash loses what
// had not been written yet: at most the last batch, never a state change,
// which the store has already committed when its event is recorded.
type journal struct {
	db      *store.DB
	log     *slog.Logger
	history int // events kept; older ones are pruned

	mu      sync.RWMutex // guards closed against in's close
	closed  bool
	in      chan journalEntry
	done    chan struct{}
	pruneIn int // events written until the next prune

	seqMu   sync.Mutex
	last    int64         // the newest written event's seq
	changed chan struct{} // closed, and replaced, when events are written
}

// journalEntry is one event or audit record, or, with only flushed set, a
// request to be told once everything queued before it is written.
type journalEntry struct {
	event   *api.Event
	audit   *api.AuditRecord
	flushed chan struct{}
}

const (
	// journalQueue bounds what waits to be written; a recorder blocks
	// once it is full, so a flood slows its senders, not the director's
	// memory.
	journalQueue = 4096
	// journalBatch bounds one transaction.
	journalBatch = 512
	// pruneEvery is how many events are written between prunes.
	pruneEvery = 1000
)

func newJournal(ctx context.Context, db *store.DB, log *slog.Logger, history int) (*journal, error) {
	last, err := db.LastEventSeq(ctx)
	if err != nil {
		return nil, err
	}
	j := &journal{
		db: db, log: log, history: history,
		in: make(chan journalEntry, journalQueue), done: make(chan struct{}),
		last: last, changed: make(chan struct{}),
	}
	go j.run()
	return j, nil
}

// add queues an entry; after close it drops it (the director is gone).
func (j *journal) add(e journalEntry) bool {
	j.mu.RLock()
	defer j.mu.RUnlock()
	if j.closed {
		return false
	}
	j.in <- e
	return true
}

// flush returns once everything queued before it is written.
func (j *journal) flush() {
	ch := make(chan struct{})
	if j.add(journalEntry{flushed: ch}) {
		<-ch
	}
}

// close writes what is queued and stops the writer.
func (j *journal) close() {
	j.mu.Lock()
	if !j.closed {
		j.closed = true
		close(j.in)
	}
	j.mu.Unlock()
	<-j.done
}

// run writes batches until in is closed and drained.
func (j *journal) run() {
	defer close(j.done)
	for first := range j.in {
		batch := []journalEntry{first}
	fill:
		for len(batch) < journalBatch {
			select {
			case e, ok := <-j.in:
				if !ok {
					break fill
				}
				batch = append(batch, e)
			default:
				break fill
			}
		}
		j.write(batch)
	}
}

func (j *journal) write(batch []journalEntry) {
	var events []*api.Event
	var audit []*api.AuditRecord
	for _, e := range batch {
		if e.event != nil {
			events = append(events, e.event)
		}
		if e.audit != nil {
			audit = append(audit, e.audit)
		}
	}
	if len(events)+len(audit) > 0 {
		// The director's own context may have ended (a stop): what is
		// queued is written all the same.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := j.db.AppendJournal(ctx, events, audit)
		cancel()
		if err != nil {
			j.log.Error("journal: events and audit records lost", api.LogErr, err)
		} else if len(events) > 0 {
			j.published(events[len(events)-1].Seq)
			j.prune(len(events))
		}
	}
	for _, e := range batch {
		if e.flushed != nil {
			close(e.flushed)
		}
	}
}

// published records seq as the newest event and wakes the followers.
func (j *journal) published(seq int64) {
	j.seqMu.Lock()
	j.last = seq
	close(j.changed)
	j.changed = make(chan struct{})
	j.seqMu.Unlock()
}

// prune drops the events beyond the history every pruneEvery events.
func (j *journal) prune(n int) {
	if j.pruneIn -= n; j.pruneIn > 0 {
		return
	}
	j.pruneIn = pruneEvery
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := j.db.PruneEvents(ctx, j.history); err != nil {
		j.log.Error("journal: prune events", api.LogErr, err)
	}
}

// watch returns the newest written event's seq and a channel closed when
// newer ones are written.
func (j *journal) watch() (int64, <-chan struct{}) {
	j.seqMu.Lock()
	defer j.seqMu.Unlock()
	return j.last, j.changed
}

// emit records an event, stamped now.
func (d *Director) emit(e api.Event) {
	e.Time = d.cfg.Now()
	d.journal.add(journalEntry{event: &e})
}

// RecordAudit adds a call to the audit trail, stamped now when its Time is
// zero. Free-text fields are cut to api.MaxAuditField.
//
// A caller past its burst waits for its turn here (auditrate.go): the
// trail keeps every call, at a pace that bounds how fast one caller can
// grow it.
func (d *Director) RecordAudit(a api.AuditRecord) {
	if wait := d.auditPace.delay(a.Kind+"\x00"+a.Org+"\x00"+a.Caller, time.Now()); wait > 0 {
		time.Sleep(wait)
	}
	if a.Time.IsZero() {
		a.Time = d.cfg.Now()
	}
	a.Target = api.Truncate(a.Target, api.MaxAuditField)
	a.Detail = api.Truncate(a.Detail, api.MaxAuditField)
	d.journal.add(journalEntry{audit: &a})
}

// FlushJournal returns once every event and audit record recorded before
// it is in the store.
func (d *Director) FlushJournal() { d.journal.flush() }

// Events returns the events after seq after (of job id when set), at most
// max. When there are none and wait is positive, it waits up to wait for
// the next ones, and returns none if nothing came; a drain ends the wait
// early.
func (d *Director) Events(ctx context.Context, after int64, job string, max int, wait time.Duration) ([]api.Event, error) {
	if max <= 0 || max > api.MaxEventPage {
		max = api.MaxEventPage
	}
	wait = min(wait, api.MaxEventWait)
	var deadline <-chan time.Time
	if wait > 0 {
		t := time.NewTimer(wait)
		defer t.Stop()
		deadline = t.C
	}
	for {
		last, changed := d.journal.watch()
		if last > after {
			events, err := d.db.Events(ctx, store.EventFilter{After: after, Job: job, Max: max})
			if err != nil || len(events) > 0 {
				return events, err
			}
			after = last // nothing of job's among them: wait past them
		}
		if deadline == nil {
			return nil, nil
		}
		select {
		case <-changed:
		case <-deadline:
			return nil, nil
		case <-d.stopping:
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// LastEventSeq returns the newest stored event's seq: a follower that
// starts from it sees only what happens next.
func (d *Director) LastEventSeq() int64 {
	last, _ := d.journal.watch()
	return last
}

// Audit returns the audit records f selects.
func (d *Director) Audit(ctx context.Context, f store.AuditFilter) ([]api.AuditRecord, error) {
	return d.db.Audit(ctx, f)
}
