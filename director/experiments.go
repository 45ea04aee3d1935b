package director

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/job"
	"github.com/fedplane/fedplane/store"
	"github.com/fedplane/fedplane/store/blob"
	"github.com/fedplane/fedplane/tensor"
)

// lifecycle is the in-memory side of the experiment lifecycle: the running
// experiments, which envoy was last given which experiment, and who waits
// for work. SQLite holds the truth; lifecycle is rebuilt from it at start-up.
type lifecycle struct {
	// life serialises the status changes of experiments with their
	// in-memory side (start, end, a round's completion), so an abort can
	// never land between a change in SQLite and its in-memory half.
	life sync.Mutex

	mu       sync.Mutex
	running  map[string]*experiment // in_progress experiments by id
	assigned map[string]string      // envoy -> its latest experiment, running or ended
	wake     map[string]chan struct{}
	changed  map[string]chan struct{} // experiment -> closed at its next change
}

func newLifecycle() *lifecycle {
	return &lifecycle{running: map[string]*experiment{}, assigned: map[string]string{},
		wake: map[string]chan struct{}{}, changed: map[string]chan struct{}{}}
}

// experiment is a running experiment.
type experiment struct {
	id           string
	manifest     *job.Manifest
	participants []string

	mu         sync.Mutex
	round      int             // the round being trained
	roundStart time.Time       // when round began here (or the director resumed it), for its duration metric
	training   map[string]bool // given the train task of round
	reported   map[string]bool // sent results for round
	receiving  map[string]bool // results of round being stored and recorded
	uploading  map[string]bool // results of round arriving: one stream per envoy
	awaiting   map[string]bool // held by their site operators, not yet approved
	// sampled are the envoys that train round (nil: every participant);
	// missed those of them that missed it, and how; refused the sites
	// that refused the job, out of every round (participation.go).
	sampled     map[string]bool
	missed      map[string]miss
	refused     map[string]bool
	seed        uint64 // of the per-round sampling
	aggregating bool
	// validated holds the validation tasks of an OpenFL task group each
	// envoy reported in round (tasks.go), valSums their metrics' sums by
	// task and name, in valOrder.
	validated map[string]map[string]bool
	valSums   map[string]*metricSum
	valOrder  []string
	model     *roundModel // the global model of round
	prev      *roundModel // the global model of round-1, opened for the first delta asked of round
	deadline  *time.Timer // the deadline of round (job.Manifest.RoundDeadline)

	// modelMu guards model's file against being closed while a tensor is
	// read from it.
	modelMu sync.RWMutex
}

// roundModel is an open global model.
type roundModel struct {
	round int
	f     *blob.Reader
	x     *tensor.Index
}

func (m *roundModel) close() {
	if m != nil && m.f != nil {
		m.f.Close()
	}
}

// hasRefused says whether envoy's site refused the experiment.
func (e *experiment) hasRefused(envoy string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.refused[envoy]
}

func (e *experiment) isParticipant(envoy string) bool {
	return slices.Contains(e.participants, envoy)
}

// closeModel closes the model once no reader uses it.
func (e *experiment) closeModel() {
	e.modelMu.Lock()
	defer e.modelMu.Unlock()
	e.model.close()
	e.model = nil
	e.prev.close()
	e.prev = nil
}

// errModelUnreadable marks a stored model that cannot be read, as opposed
// to a passing database error.
var errModelUnreadable = errors.New("model unreadable")

// openModel opens the global model a round trains from.
func (d *Director) openModel(ctx context.Context, id string, round int) (*roundModel, error) {
	rounds, err := d.db.Rounds(ctx, id)
	if err != nil {
		return nil, err
	}
	for _, r := range rounds {
		if r.Round != round {
			continue
		}
		if r.Pruned() {
			return nil, prunedModel(id, round)
		}
		f, err := d.openBlob(ctx, r.ModelPath)
		if err != nil {
			return nil, fmt.Errorf("%w: model of round %d: %w", errModelUnreadable, round, err)
		}
		x, _, err := tensor.ReadSafetensors(f, f.Size())
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%w: model of round %d: %s: %w", errModelUnreadable, round, r.ModelPath, err)
		}
		return &roundModel{round: round, f: f, x: x}, nil
	}
	return nil, fmt.Errorf("%w: experiment %s has no model for round %d", errModelUnreadable, id, round)
}

// manifestOf decodes the job.json stored with an experiment.
func manifestOf(e store.Experiment) (*job.Manifest, error) {
	m, err := job.ParseManifest([]byte(e.Manifest))
	if err != nil {
		return nil, fmt.Errorf("experiment %s: stored job.json: %w", e.ID, err)
	}
	return m, nil
}

// loadRunning rebuilds the runtime from SQLite after a start: the running
// experiments at their current round, and each envoy's latest experiment.
func (d *Director) loadRunning(ctx context.Context) error {
	assigned, err := d.db.LatestAssignments(ctx)
	if err != nil {
		return err
	}
	d.lc.assigned = assigned
	exps, err := d.db.ListExperiments(ctx, store.ExperimentFilter{Statuses: []api.JobStatus{api.JobInProgress}})
	if err != nil {
		return err
	}
	for _, e := range exps {
		if err := d.resume(ctx, e); err != nil {
			d.log.Error("cannot resume experiment", api.LogJob, e.ID, api.LogErr, err)
			ended, err := d.db.EndExperiment(ctx, e.ID, api.JobFailed, "cannot resume after a director restart: "+err.Error())
			if err != nil {
				return err
			}
			d.emitEnded(ended)
		}
	}
	return nil
}

// resume puts one in_progress experiment back to work at its latest round.
func (d *Director) resume(ctx context.Context, e store.Experiment) error {
	m, err := manifestOf(e)
	if err != nil {
		return err
	}
	parts, err := d.db.ExperimentEnvoys(ctx, e.ID)
	if err != nil {
		return err
	}
	rounds, err := d.db.Rounds(ctx, e.ID)
	if err != nil {
		return err
	}
	if len(rounds) == 0 {
		return errors.New("no model stored")
	}
	cur := rounds[len(rounds)-1].Round
	model, err := d.openModel(ctx, e.ID, cur)
	if err != nil {
		return err
	}
	results, err := d.db.TaskResults(ctx, e.ID, cur)
	if err != nil {
		model.close()
		return err
	}
	exp := newExperiment(e.ID, m, nil, cur, model)
	exp.roundStart = d.cfg.Now()
	for _, p := range parts {
		exp.participants = append(exp.participants, p.Envoy)
		if p.Status == api.EnvoyRefused {
			exp.refused[p.Envoy] = true
		}
	}
	exp.sampled = nameSet(rounds[len(rounds)-1].Participants)
	for _, r := range results {
		exp.reported[r.Envoy] = true
	}
	d.lc.mu.Lock()
	d.lc.running[e.ID] = exp
	d.lc.mu.Unlock()
	d.log.Info("experiment resumed", api.LogJob, e.ID, api.LogRound, cur, api.LogReports, len(results))
	exp.mu.Lock()
	v, _ := exp.verdictLocked(false)
	if v == closeRound {
		// The round's reports arrived before the stop: aggregate now.
		exp.aggregating = true
	}
	exp.mu.Unlock()
	if v == closeRound {
		d.aggregateAsync(exp, cur)
		return nil
	}
	d.armRound(exp, cur)
	return nil
}

// startExperiment makes a pending experiment run on envoys.
func (d *Director) startExperiment(ctx context.Context, e store.Experiment, m *job.Manifest, envoys []string) error {
	model, err := d.openModel(ctx, e.ID, 0)
	if errors.Is(err, errModelUnreadable) {
		// A job whose model cannot be read can never run.
		d.endExperiment(ctx, e.ID, api.JobFailed, "cannot open the initial model: "+err.Error())
		return err
	}
	if err != nil {
		return err
	}
	d.lc.life.Lock()
	defer d.lc.life.Unlock()
	exp := newExperiment(e.ID, m, envoys, 0, model)
	sampled := d.sample(exp, 0)
	exp.sampled = nameSet(sampled)
	if _, err := d.db.StartExperiment(ctx, e.ID, envoys, sampled); err != nil {
		model.close()
		return err
	}
	exp.roundStart = d.cfg.Now()
	d.lc.mu.Lock()
	d.lc.running[e.ID] = exp
	for _, name := range envoys {
		d.lc.assigned[name] = e.ID
		if ch, ok := d.lc.wake[name]; ok {
			close(ch)
			delete(d.lc.wake, name)
		}
	}
	d.lc.mu.Unlock()
	d.armRound(exp, 0)
	d.emit(api.Event{Kind: api.EventJobStarted, Job: e.ID, JobName: e.Name, Message: "on " + strings.Join(envoys, ", ")})
	d.log.InfoContext(ctx, "experiment started", api.LogJob, e.ID, api.LogJobName, e.Name, api.LogEnvoys, envoys, api.LogRounds, m.Rounds)
	d.notify(e.ID)
	return nil
}

// endExperiment moves an experiment to a terminal status, once: a second
// end (an abort racing a failure, say) returns api.ErrConflict and changes
// nothing. Its envoys are told to stop by GetTasks and their heartbeats.
func (d *Director) endExperiment(ctx context.Context, id string, status api.JobStatus, reason string) (store.Experiment, error) {
	d.lc.life.Lock()
	defer d.lc.life.Unlock()
	e, err := d.db.EndExperiment(ctx, id, status, reason)
	if err != nil {
		return e, err
	}
	d.emitEnded(e)
	d.lc.mu.Lock()
	exp := d.lc.running[id]
	delete(d.lc.running, id)
	d.lc.mu.Unlock()
	if exp != nil {
		exp.disarm()
		exp.closeModel()
	}
	d.log.InfoContext(ctx, "experiment ended", api.LogJob, id, api.LogStatus, status, api.LogReason, reason)
	d.notify(id)
	d.kickScheduler()
	return e, nil
}

// emitEnded records the event of an experiment's end: finished, failed or
// aborted, with its reason.
func (d *Director) emitEnded(e store.Experiment) {
	kind := api.EventJobFailed
	switch e.Status {
	case api.JobFinished:
		kind = api.EventJobFinished
	case api.JobAborted:
		kind = api.EventJobAborted
	}
	d.emit(api.Event{Kind: kind, Job: e.ID, JobName: e.Name, Message: e.Reason})
}

// runningExperiment returns the running experiment id, or nil.
func (d *Director) runningExperiment(id string) *experiment {
	d.lc.mu.Lock()
	defer d.lc.mu.Unlock()
	return d.lc.running[id]
}

// runningOf returns the running experiment envoy takes part in, or "".
func (d *Director) runningOf(envoy string) string {
	d.lc.mu.Lock()
	defer d.lc.mu.Unlock()
	id := d.lc.assigned[envoy]
	if _, ok := d.lc.running[id]; ok {
		return id
	}
	return ""
}

// runningByEnvoy returns the running experiment of every envoy that has one,
// in one look at the runtime (runningOf for a whole list).
func (d *Director) runningByEnvoy() map[string]string {
	d.lc.mu.Lock()
	defer d.lc.mu.Unlock()
	out := make(map[string]string, len(d.lc.running))
	for envoy, id := range d.lc.assigned {
		if _, ok := d.lc.running[id]; ok {
			out[envoy] = id
		}
	}
	return out
}

// latestOf returns the experiment envoy was last given, running or ended.
func (d *Director) latestOf(envoy string) string {
	d.lc.mu.Lock()
	defer d.lc.mu.Unlock()
	return d.lc.assigned[envoy]
}

// WaitForWork blocks until envoy has a running experiment and returns its
// id (at once when it has one, as after a reconnect; never an ended one),
// or until ctx ends or the director drains.
func (d *Director) WaitForWork(ctx context.Context, envoy string) (string, error) {
	for {
		d.lc.mu.Lock()
		if id := d.lc.assigned[envoy]; id != "" && d.lc.running[id] != nil {
			exp := d.lc.running[id]
			d.lc.mu.Unlock()
			// A site that refused the job is not offered it again; it
			// waits for its next one.
			if !exp.hasRefused(envoy) {
				return id, nil
			}
			d.lc.mu.Lock()
		}
		ch, ok := d.lc.wake[envoy]
		if !ok {
			ch = make(chan struct{})
			d.lc.wake[envoy] = ch
		}
		d.lc.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return "", ctx.Err()
		case <-d.stopping:
			return "", errStopping
		}
	}
}

// envoysOffline records that envoys that went offline miss the current
// round of their running experiments; the round then closes without them
// once its quorum has reported, and they rejoin if they come back
// (participation.go).
func (d *Director) envoysOffline(ctx context.Context, names []string) {
	for _, name := range names {
		exp := d.runningExperiment(d.runningOf(name))
		if exp == nil {
			continue
		}
		reason := fmt.Sprintf("envoy %s went offline: no health check for %v", name, d.cfg.OfflineAfter)
		if err := d.missRound(ctx, exp, name, missOffline, false, reason); err != nil {
			d.log.ErrorContext(ctx, "record an offline envoy's missed round", api.LogJob, exp.id, api.LogErr, err)
		}
	}
}

// nameSet is names as a set; nil for nil.
func nameSet(names []string) map[string]bool {
	if names == nil {
		return nil
	}
	out := make(map[string]bool, len(names))
	for _, n := range names {
		out[n] = true
	}
	return out
}

// disarmAll stops every round timer, when the director begins to stop: a
// timer firing while envoys cannot reach the director would fail a job a
// restart resumes.
func (d *Director) disarmAll() {
	d.lc.mu.Lock()
	defer d.lc.mu.Unlock()
	for _, exp := range d.lc.running {
		exp.disarm()
	}
}

// stopAll closes the models of running experiments at shutdown.
func (d *Director) stopAll() {
	d.lc.mu.Lock()
	defer d.lc.mu.Unlock()
	for _, exp := range d.lc.running {
		exp.disarm()
		exp.closeModel()
	}
}

// newExperiment is a running experiment at round with its model open.
func newExperiment(id string, m *job.Manifest, participants []string, round int, model *roundModel) *experiment {
	return &experiment{id: id, manifest: m, participants: participants, round: round, model: model,
		training: map[string]bool{}, reported: map[string]bool{}, receiving: map[string]bool{},
		uploading: map[string]bool{}, awaiting: map[string]bool{},
		missed: map[string]miss{}, refused: map[string]bool{}, seed: samplingSeed(id, m.SamplingSeed),
		validated: map[string]map[string]bool{}, valSums: map[string]*metricSum{}}
}
