package director

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/store"
)

// registry is the director's view of its envoys. Shard info and status live
// in SQLite; liveness lives here, in memory, and reaches SQLite in batches
// (flush), so a heartbeat costs no disk write unless it changes a status.
type registry struct {
	db           *store.DB
	now          func() time.Time
	offlineAfter time.Duration
	log          *slog.Logger
	// loaded is when the registry was loaded: no envoy is swept offline
	// before loaded+offlineAfter, so a director that was down for a while
	// gives its envoys time to reach it again before failing their jobs.
	loaded time.Time
	// emit records an event: set by the director before any call.
	emit func(api.Event)

	mu     sync.RWMutex
	envoys map[string]*envoyEntry
}

// envoyEntry is one envoy's in-memory state. persisted mirrors the row, so
// a heartbeat can tell a status change (written at once) from plain liveness.
//
// mu guards the fields and is never held across a write to SQLite, so
// listings never wait on the disk; write serialises one envoy's status
// writes (a heartbeat's online, a sweep's offline), so they land in the
// order they were decided.
type envoyEntry struct {
	write     sync.Mutex
	mu        sync.Mutex
	persisted store.Envoy
	lastSeen  time.Time
	running   bool
	dirty     bool // lastSeen is newer than the row's last_seen
}

func newRegistry(ctx context.Context, db *store.DB, now func() time.Time, offlineAfter time.Duration, log *slog.Logger) (*registry, error) {
	rows, err := db.ListEnvoys(ctx)
	if err != nil {
		return nil, fmt.Errorf("load envoys: %w", err)
	}
	r := &registry{db: db, now: now, offlineAfter: offlineAfter, log: log, loaded: now(), envoys: make(map[string]*envoyEntry, len(rows))}
	for _, e := range rows {
		r.envoys[e.Name] = &envoyEntry{persisted: e, lastSeen: e.LastSeen, running: e.ExperimentRunning}
	}
	return r, nil
}

// register stores e's shard info and marks it online and seen now. The
// SQLite write happens outside the registry's lock, so heartbeats and
// listings never wait on the disk; a heartbeat of e that lands meanwhile
// is folded in by the entry swap below.
func (r *registry) register(ctx context.Context, e store.Envoy) (store.Envoy, error) {
	r.mu.RLock()
	old, ok := r.envoys[e.Name]
	r.mu.RUnlock()
	if ok {
		// Hold the old entry's write lock across the upsert and the swap,
		// so that a sweep's offline write of it cannot land after the
		// new row (writeStatus skips an entry no longer in the map).
		old.write.Lock()
		defer old.write.Unlock()
		old.mu.Lock()
		e.ExperimentRunning = old.running
		old.mu.Unlock()
	}
	row, err := r.db.UpsertEnvoy(ctx, e)
	if err != nil {
		return store.Envoy{}, err
	}
	entry := &envoyEntry{persisted: row, lastSeen: row.LastSeen, running: row.ExperimentRunning}
	r.mu.Lock()
	if cur, ok := r.envoys[e.Name]; ok {
		cur.mu.Lock()
		if cur.lastSeen.After(entry.lastSeen) {
			entry.lastSeen, entry.dirty = cur.lastSeen, true
		}
		cur.mu.Unlock()
	}
	r.envoys[e.Name] = entry
	r.mu.Unlock()
	return row, nil
}

// remove forgets name, in SQLite and here. It holds the entry's write lock
// across both, as register does, so a registration racing with it either
// lands first (and is forgotten) or after (and is kept, row and entry).
func (r *registry) remove(ctx context.Context, name string) error {
	for {
		r.mu.RLock()
		e, ok := r.envoys[name]
		r.mu.RUnlock()
		if !ok {
			return fmt.Errorf("envoy %q is not registered: %w", name, api.ErrNotFound)
		}
		e.write.Lock()
		r.mu.RLock()
		current := r.envoys[name] == e
		r.mu.RUnlock()
		if !current {
			// A registration swapped the entry while we waited: remove
			// the new one.
			e.write.Unlock()
			continue
		}
		err := r.db.DeleteEnvoy(ctx, name)
		if err == nil {
			r.mu.Lock()
			delete(r.envoys, name)
			r.mu.Unlock()
		}
		e.write.Unlock()
		return err
	}
}

// heartbeat records that name is alive. An unknown name is api.ErrNotFound, which
// tells an envoy to register again. Only a status change writes to SQLite;
// changed reports one. devices, if not empty, replaces the envoy's GPU
// status in memory only: utilisation changes with every heartbeat, and a
// disk write each time would cost more than the status is worth after a
// restart, when the next heartbeat brings it again (the registration's list
// is on disk meanwhile).
func (r *registry) heartbeat(ctx context.Context, name string, running bool, devices string) (changed bool, err error) {
	r.mu.RLock()
	e, ok := r.envoys[name]
	r.mu.RUnlock()
	if !ok {
		return false, fmt.Errorf("envoy %q is not registered: %w", name, api.ErrNotFound)
	}
	now := r.now()
	e.mu.Lock()
	if now.After(e.lastSeen) {
		e.lastSeen = now
	}
	e.running = running
	if devices != "" {
		e.persisted.Devices = devices
	}
	if e.persisted.Online && e.persisted.ExperimentRunning == running {
		e.dirty = true
		e.mu.Unlock()
		return false, nil
	}
	e.mu.Unlock()
	return r.writeStatus(ctx, name, e, true)
}

// writeStatus writes e's status change (to online or to offline) and folds
// it into e. It decides again under e.write, since another write may have
// landed while it waited, and reports whether it wrote.
func (r *registry) writeStatus(ctx context.Context, name string, e *envoyEntry, online bool) (bool, error) {
	e.write.Lock()
	defer e.write.Unlock()
	r.mu.RLock()
	current := r.envoys[name] == e
	r.mu.RUnlock()
	if !current {
		return false, nil // registered again meanwhile: the new row stands
	}
	e.mu.Lock()
	var st store.EnvoyStatus
	if online {
		if e.persisted.Online && e.persisted.ExperimentRunning == e.running {
			e.mu.Unlock()
			return false, nil
		}
	} else if !e.persisted.Online || r.online(e.lastSeen, r.now()) {
		e.mu.Unlock()
		return false, nil
	}
	wasOnline := e.persisted.Online
	st = store.EnvoyStatus{Name: name, Online: online, ExperimentRunning: e.running, LastSeen: e.lastSeen}
	e.mu.Unlock()

	if err := r.db.SetEnvoyStatus(ctx, st); err != nil {
		e.mu.Lock()
		e.dirty = true
		e.mu.Unlock()
		return false, err
	}
	e.mu.Lock()
	e.persisted.Online, e.persisted.ExperimentRunning, e.persisted.LastSeen = st.Online, st.ExperimentRunning, st.LastSeen
	e.dirty = e.lastSeen.After(st.LastSeen) // a heartbeat landed during the write
	e.mu.Unlock()
	switch {
	case online && !wasOnline:
		r.log.InfoContext(ctx, "envoy online", api.LogEnvoy, name)
		r.emit(api.Event{Kind: api.EventEnvoyOnline, Envoy: name})
	case !online:
		r.log.WarnContext(ctx, "envoy offline", api.LogEnvoy, name, api.LogLastSeen, st.LastSeen)
		r.emit(api.Event{Kind: api.EventEnvoyOffline, Envoy: name,
			Message: "last seen " + st.LastSeen.UTC().Format(time.RFC3339)})
	}
	return true, nil
}

// online reports whether an envoy last seen at lastSeen counts as online now.
func (r *registry) online(lastSeen, now time.Time) bool {
	return now.Before(lastSeen.Add(r.offlineAfter))
}

// list returns every envoy, ordered by name, with liveness judged now.
func (r *registry) list() []EnvoyView {
	views, _, _ := r.page("", math.MaxInt)
	return views
}

// page returns up to max envoys whose names sort after after, ordered by
// name, with liveness judged now, how many envoys there are in all, and
// whether more sort after the last one returned. It
// sorts only the names after the cursor, so paging through many envoys
// costs less with each page, and it sorts pointers and copies each envoy
// once: with 10,000 envoys, sorting the copies themselves was most of
// list_envoys' time on the director.
func (r *registry) page(after string, max int) (views []EnvoyView, total int, more bool) {
	now := r.now()
	type named struct {
		name string
		e    *envoyEntry
	}
	r.mu.RLock()
	total = len(r.envoys)
	entries := make([]named, 0, len(r.envoys))
	for name, e := range r.envoys {
		if name > after {
			entries = append(entries, named{name, e})
		}
	}
	r.mu.RUnlock()
	slices.SortFunc(entries, func(a, b named) int { return strings.Compare(a.name, b.name) })
	more = len(entries) > max
	entries = entries[:min(len(entries), max)]
	out := make([]EnvoyView, len(entries))
	for i, n := range entries {
		e := n.e
		e.mu.Lock()
		out[i].Envoy = e.persisted
		out[i].LastSeen, out[i].ExperimentRunning = e.lastSeen, e.running
		e.mu.Unlock()
		out[i].Online = r.online(out[i].LastSeen, now)
	}
	return out, total, more
}

// count returns how many envoys are registered and how many of them are
// online now, without copying them; lag is the age of the oldest last
// heartbeat among those online.
func (r *registry) count() (total, online int, lag time.Duration) {
	now := r.now()
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, e := range r.envoys {
		e.mu.Lock()
		seen := e.lastSeen
		e.mu.Unlock()
		if r.online(seen, now) {
			online++
			lag = max(lag, now.Sub(seen))
		}
	}
	return len(r.envoys), online, lag
}

// flush writes the liveness gathered since the last flush in one transaction.
func (r *registry) flush(ctx context.Context) error {
	seen := map[string]time.Time{}
	r.mu.RLock()
	for name, e := range r.envoys {
		e.mu.Lock()
		if e.dirty {
			seen[name] = e.lastSeen
			e.dirty = false
		}
		e.mu.Unlock()
	}
	r.mu.RUnlock()
	if err := r.db.TouchEnvoys(ctx, seen); err != nil {
		r.markDirty(seen)
		return err
	}
	return nil
}

// markDirty re-queues liveness whose flush failed.
func (r *registry) markDirty(seen map[string]time.Time) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	for name := range seen {
		if e, ok := r.envoys[name]; ok {
			e.mu.Lock()
			e.dirty = true
			e.mu.Unlock()
		}
	}
}

// sweep writes the offline transitions of envoys whose liveness ran out, and
// returns their names.
func (r *registry) sweep(ctx context.Context) ([]string, error) {
	now := r.now()
	var gone []string
	if now.Before(r.loaded.Add(r.offlineAfter)) {
		return nil, nil // the grace after a start
	}
	r.mu.RLock()
	entries := make(map[string]*envoyEntry, len(r.envoys))
	for name, e := range r.envoys {
		entries[name] = e
	}
	r.mu.RUnlock()
	for name, e := range entries {
		e.mu.Lock()
		due := e.persisted.Online && !r.online(e.lastSeen, now)
		e.mu.Unlock()
		if !due {
			continue
		}
		wrote, err := r.writeStatus(ctx, name, e, false)
		if err != nil {
			return gone, err
		}
		if wrote {
			gone = append(gone, name)
		}
	}
	return gone, nil
}

// run sweeps for offline envoys every sweepEvery and flushes liveness every
// flushEvery until ctx ends, then flushes once more so a clean stop loses no
// liveness. offline, if not nil, is told of the envoys each sweep found gone.
func (r *registry) run(ctx context.Context, sweepEvery, flushEvery time.Duration, offline func(context.Context, []string)) {
	sweepT, flushT := time.NewTicker(sweepEvery), time.NewTicker(flushEvery)
	defer sweepT.Stop()
	defer flushT.Stop()
	for {
		select {
		case <-ctx.Done():
			if err := r.flush(context.WithoutCancel(ctx)); err != nil {
				r.log.Error("flush envoy liveness", api.LogErr, err)
			}
			return
		case <-flushT.C:
			if err := r.flush(ctx); err != nil {
				r.log.ErrorContext(ctx, "flush envoy liveness", api.LogErr, err)
			}
		case <-sweepT.C:
			gone, err := r.sweep(ctx)
			if err != nil {
				r.log.ErrorContext(ctx, "sweep envoy liveness", api.LogErr, err)
			}
			if len(gone) > 0 && offline != nil {
				offline(ctx, gone)
			}
		}
	}
}
