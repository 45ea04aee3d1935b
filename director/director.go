// Package director is fedplane's coordinating service, as a domain: the
// envoy registry and its liveness (registry.go, envoys.go), the scheduler
// (scheduler.go), the experiment lifecycle (experiments.go), rounds and their
// aggregation (rounds.go), job submission and results (jobs.go,
// results.go), and who may do what (auth.go). State lives in SQLite
// (package store) and stored files in a blob store, files under the data
// dir or an S3 bucket (package store/blob, files.go).
//
// The director speaks no protocol itself. Its adapters are subpackages that
// parse a request, authorize the caller, call the domain and format the
// reply: director/openfl serves OpenFL's Director and Aggregator gRPC
// services, director/admin the admin channel of fladmin; director/server
// puts them together on their listeners.
package director

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/director/metrics"
	"github.com/fedplane/fedplane/store"
	"github.com/fedplane/fedplane/store/blob"
)

// Defaults of Config.
const (
	DefaultDataDir           = "./fedplane-data"
	DefaultHealthCheckPeriod = 10 * time.Second
	// DefaultMaxJobSize caps a job archive upload (--max-job-size).
	DefaultMaxJobSize = 10 << 30
	// DefaultMaxUnpackedSize caps a job archive's unpacked total.
	DefaultMaxUnpackedSize = 20 << 30
	// DefaultMaxResultsInFlight caps the temp space of task results being
	// received, all envoys together (--max-results-in-flight).
	DefaultMaxResultsInFlight = 20 << 30
	// dbFile is the SQLite file's name inside the data dir.
	dbFile = "fedplane.db"
)

// Config configures a Director. Zero fields take the Default values.
type Config struct {
	DataDir string
	// Database is the store's URL (store.Open): postgres://... for a
	// PostgreSQL database, sqlite:PATH for a SQLite file; the SQLite file
	// fedplane.db in DataDir when empty. Files go to Blobs either way.
	Database string
	// Lease, when set, is the coordinator lease this director holds among
	// replicas on one database: every write of its store checks that it
	// still does (store.DB.Fence), so a replica that lost the lease,
	// paused past it say, changes nothing once another has taken over.
	Lease *store.Lease
	// Blobs keeps the stored files: job archives, round models, server
	// state, task results, training logs. When nil, files under DataDir
	// (blob.NewFile), as always.
	Blobs blob.Store
	// SampleShape and TargetShape are the federation's dataset shapes. A shard
	// must match them to be accepted; when both are empty any shard is.
	SampleShape []string
	TargetShape []string
	// HealthCheckPeriod is the heartbeat period the director hands envoys.
	HealthCheckPeriod time.Duration
	// OfflineAfter is how long after its last heartbeat an envoy counts as
	// offline; 2×HealthCheckPeriod when zero (OpenFL's valid_duration).
	OfflineAfter time.Duration
	// MaxJobSize caps a job archive upload and an envoy's task results,
	// MaxUnpackedSize a job archive's unpacked total.
	MaxJobSize      int64
	MaxUnpackedSize int64
	// MaxResultsInFlight caps the bytes of task results being received at
	// once, all envoys together: each upload reserves the most its
	// experiment's model allows (tensor.MaxTaskResultsSize) before it
	// writes, and one past the cap is refused with api.ErrBusy.
	MaxResultsInFlight int64
	Version            string
	Logger             *slog.Logger
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Metrics records what Prometheus is shown; a new set when nil.
	Metrics *metrics.Director
	// EventHistory is how many events the director keeps
	// (api.DefaultEventHistory when 0); older ones are pruned.
	EventHistory int
}

func (c *Config) setDefaults() {
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	if c.HealthCheckPeriod == 0 {
		c.HealthCheckPeriod = DefaultHealthCheckPeriod
	}
	if c.OfflineAfter == 0 {
		c.OfflineAfter = 2 * c.HealthCheckPeriod
	}
	if c.MaxJobSize == 0 {
		c.MaxJobSize = DefaultMaxJobSize
	}
	if c.MaxUnpackedSize == 0 {
		c.MaxUnpackedSize = DefaultMaxUnpackedSize
	}
	if c.MaxResultsInFlight == 0 {
		c.MaxResultsInFlight = DefaultMaxResultsInFlight
	}
	if c.Version == "" {
		c.Version = "dev"
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Metrics == nil {
		c.Metrics = metrics.NewDirector()
	}
	if c.EventHistory == 0 {
		c.EventHistory = api.DefaultEventHistory
	}
}

func (c *Config) validate() error {
	if c.HealthCheckPeriod < 10*time.Millisecond {
		return fmt.Errorf("health check period %v: must be at least 10ms", c.HealthCheckPeriod)
	}
	if c.OfflineAfter < c.HealthCheckPeriod {
		return fmt.Errorf("offline-after %v: must be at least the health check period (%v)", c.OfflineAfter, c.HealthCheckPeriod)
	}
	if c.EventHistory < 100 {
		return fmt.Errorf("event history %d: must keep at least 100 events", c.EventHistory)
	}
	if c.MaxJobSize < 0 || c.MaxUnpackedSize < 0 || c.MaxResultsInFlight < 0 {
		return errors.New("size caps must not be negative")
	}
	for _, s := range [][]string{c.SampleShape, c.TargetShape} {
		for _, d := range s {
			if d == "" {
				return fmt.Errorf("shape %v: empty dimension", s)
			}
		}
	}
	return nil
}

// Director is the coordinating service's domain. New opens its state, Run
// runs its background work, Drain begins a stop, Close releases it.
type Director struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics.Director
	db      *store.DB
	blobs   blob.Store
	reg     *registry
	journal *journal
	// auditPace paces each caller's audit records (auditrate.go).
	auditPace auditPace
	started   time.Time

	lc       *lifecycle
	kick     chan struct{} // wakes the scheduler
	stopping chan struct{} // closed by Drain: ends long polls
	drain    sync.Once
	// work tracks goroutines the director starts on its own (aggregations),
	// so Close and WaitIdle wait for them.
	work background
	// downloads bounds the heavy replies in progress (trained models over
	// gRPC, result bundles over the admin port), per caller and overall.
	downloads *Gate
	// logs is what the director knows of shared training logs (logs.go).
	logs trainLogs
	// inflight is the temp space reserved by task results being received.
	inflight struct {
		sync.Mutex
		n int64
	}
	// heldRes is the partial task results of cut streams (heldresults.go).
	heldRes heldTable
	// heldUploadsTaken is set once HeldUploads has handed the admin port
	// the partial uploads of the last run (partial.go).
	heldUploadsTaken atomic.Bool
}

// background counts goroutines in flight. Unlike a sync.WaitGroup it may be
// waited on while new ones start: a wait returns once the count is zero.
type background struct {
	mu     sync.Mutex
	n      int
	idle   chan struct{} // closed when n drops to zero; nil while n is zero
	closed bool          // set by close: Go starts nothing more
}

// Go runs f on a goroutine of its own, counted until it returns, unless
// close was called: then it runs nothing and reports false.
func (b *background) Go(f func()) bool {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return false
	}
	if b.n == 0 {
		b.idle = make(chan struct{})
	}
	b.n++
	b.mu.Unlock()
	go func() {
		defer func() {
			b.mu.Lock()
			if b.n--; b.n == 0 {
				close(b.idle)
				b.idle = nil
			}
			b.mu.Unlock()
		}()
		f()
	}()
	return true
}

// close makes Go refuse new work and waits for what runs.
func (b *background) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.Wait()
}

// Wait returns once no goroutine started by Go is running.
func (b *background) Wait() {
	b.mu.Lock()
	idle := b.idle
	b.mu.Unlock()
	if idle != nil {
		<-idle
	}
}

// New opens the data dir and the database, loads the registry, and puts
// the experiments that were running back to work.
func New(ctx context.Context, cfg Config) (*Director, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", api.ErrInvalid, err)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if cfg.Blobs == nil {
		fb, err := blob.NewFile(cfg.DataDir, cfg.DataDir)
		if err != nil {
			return nil, err
		}
		cfg.Blobs = fb
	}
	dsn := cfg.Database
	if dsn == "" {
		dsn = "sqlite:" + filepath.Join(cfg.DataDir, dbFile)
	}
	db, err := store.Open(ctx, dsn, store.Options{Now: cfg.Now})
	if err != nil {
		return nil, err
	}
	if l := cfg.Lease; l != nil {
		db.Fence(l.Name, l.Holder, l.Epoch)
	}
	reg, err := newRegistry(ctx, db, cfg.Now, cfg.OfflineAfter, cfg.Logger)
	if err != nil {
		db.Close()
		return nil, err
	}
	jn, err := newJournal(ctx, db, cfg.Logger, cfg.EventHistory)
	if err != nil {
		db.Close()
		return nil, err
	}
	d := &Director{
		cfg: cfg, log: cfg.Logger, metrics: cfg.Metrics, db: db, blobs: cfg.Blobs, reg: reg, journal: jn, started: cfg.Now(),
		lc: newLifecycle(), kick: make(chan struct{}, 1), stopping: make(chan struct{}),
		downloads: NewGate("downloads", MaxDownloads, MaxDownloadsPerCaller),
	}
	reg.emit = d.emit
	d.metrics.Watch(d)
	if err := d.retainAll(ctx); err != nil {
		// Not fatal: the models stay until the job's next round or start.
		d.log.Warn("keep_models: applying it after a crash failed", api.LogErr, err)
	}
	if err := d.reconcile(ctx); err != nil {
		jn.close()
		db.Close()
		return nil, err
	}
	if err := d.loadRunning(ctx); err != nil {
		// Resumed rounds may have started aggregating: let them end first.
		d.Drain()
		d.work.close()
		d.stopAll()
		jn.close()
		db.Close()
		return nil, fmt.Errorf("load running experiments: %w", err)
	}
	d.loadHeldResults()
	return d, nil
}

// Config returns the director's configuration, defaults filled in.
func (d *Director) Config() Config { return d.cfg }

// Close waits for the aggregations in flight, then closes open models,
// writes the journal's last entries and closes the database. Call it after
// Run has returned.
func (d *Director) Close() error {
	d.Drain()
	d.work.close()
	d.stopAll()
	d.closeHeldResults()
	d.journal.close()
	return d.db.Close()
}

// WaitIdle returns once no aggregation the director started on its own is
// in flight: after the last report of a round, the round's model is then
// stored and the experiment has moved on (or ended).
func (d *Director) WaitIdle() { d.work.Wait() }

// Run does the director's background work until ctx ends: it sweeps envoy
// liveness, flushes it to the store, and schedules pending jobs. It flushes
// once more before it returns, so a clean stop loses no liveness.
func (d *Director) Run(ctx context.Context) error {
	d.log.Info("director running", api.LogDataDir, d.cfg.DataDir, api.LogDatabase, d.db.Backend(), api.LogVersion, d.cfg.Version,
		api.LogHealth, d.cfg.HealthCheckPeriod, api.LogOffline, d.cfg.OfflineAfter)
	if len(d.cfg.SampleShape) == 0 && len(d.cfg.TargetShape) == 0 {
		d.log.Warn("no --sample-shape or --target-shape set: accepting shards of any shape")
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		d.reg.run(ctx, tickInterval(d.cfg.HealthCheckPeriod), flushInterval(d.cfg.HealthCheckPeriod), d.envoysOffline)
	})
	wg.Go(func() { d.runScheduler(ctx, tickInterval(d.cfg.HealthCheckPeriod)) })
	wg.Wait()
	return nil
}

// Drain begins a stop: long polls (WaitExperiment, metric streams) end with
// api.ErrUnavailable, and round timers stop, since a timer that fired
// while envoys cannot reach the director would fail a job a restart
// resumes. Call it before the servers stop; later calls do nothing.
func (d *Director) Drain() {
	d.drain.Do(func() {
		close(d.stopping)
		d.disarmAll()
	})
}

// Stopping returns a channel closed by Drain: adapters with streams of
// their own (the web console's event streams) end them on it.
func (d *Director) Stopping() <-chan struct{} { return d.stopping }

// draining reports whether Drain has been called.
func (d *Director) draining() bool {
	select {
	case <-d.stopping:
		return true
	default:
		return false
	}
}

// errStopping answers long polls once the director drains.
var errStopping = fmt.Errorf("director is stopping: %w", api.ErrUnavailable)

// tickInterval is how often the registry flushes liveness and sweeps: half a
// period, so an offline transition is written at most half a period late.
func tickInterval(period time.Duration) time.Duration {
	return min(max(period/2, 10*time.Millisecond), 5*time.Second)
}

// flushInterval is how often the registry writes plain liveness (last_seen)
// to the store: every third period, at most every 30 s, so a flush writes
// each live envoy once instead of once per heartbeat. Status changes,
// online and offline transitions among them, are written at once; a clean
// stop flushes; a crash loses at most this much of last_seen, which only
// the listings show and a restart's grace period covers.
func flushInterval(period time.Duration) time.Duration {
	return max(min(3*period, 30*time.Second), tickInterval(period))
}
