package director

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/store"
	"github.com/fedplane/fedplane/store/blob"
)

// This file is what envoys do outside rounds: register, heartbeat, wait for
// work, fetch it, report a failure; and what the federation's listings show
// of them.

// maxReasonLen bounds a failure description kept with an experiment.
const maxReasonLen = 8 << 10

// Caps on what an envoy's shard info stores and every listing shows.
const (
	// MaxShardDescription caps shard_description, in bytes.
	MaxShardDescription = 4 << 10
	// MaxShapeDims caps the dimensions of sample_shape and target_shape.
	MaxShapeDims = 32
	// MaxDimLen caps one dimension of a shape, in bytes.
	MaxDimLen = 64
)

// checkShard refuses shard info over the caps, naming the field.
func checkShard(e store.Envoy) error {
	if n := len(e.Description); n > MaxShardDescription {
		return fmt.Errorf("%w: shard_description of %d bytes exceeds the cap of %d", api.ErrInvalid, n, MaxShardDescription)
	}
	for _, s := range []struct {
		field string
		dims  []string
	}{{"sample_shape", e.SampleShape}, {"target_shape", e.TargetShape}} {
		if len(s.dims) > MaxShapeDims {
			return fmt.Errorf("%w: %s has %d dimensions, over the cap of %d", api.ErrInvalid, s.field, len(s.dims), MaxShapeDims)
		}
		for i, d := range s.dims {
			if len(d) > MaxDimLen {
				return fmt.Errorf("%w: %s[%d] of %d bytes exceeds the cap of %d", api.ErrInvalid, s.field, i, len(d), MaxDimLen)
			}
		}
	}
	return nil
}

// RegisterEnvoy registers an envoy, or updates the shard info of a known
// one, if its shapes are the federation's. A shard of other shapes is not
// an error: refused says why, and nothing is stored.
func (d *Director) RegisterEnvoy(ctx context.Context, e store.Envoy) (refused string, err error) {
	if err := api.ValidateName("node_info.name", e.Name); err != nil {
		return "", err
	}
	if err := checkShard(e); err != nil {
		return "", err
	}
	if why := d.shapeMismatch(e.SampleShape, e.TargetShape); why != "" {
		d.log.WarnContext(ctx, "shard refused", api.LogEnvoy, e.Name, api.LogReason, why)
		return why, nil
	}
	if _, err := d.reg.register(ctx, e); err != nil {
		return "", err
	}
	d.log.InfoContext(ctx, "envoy registered", api.LogEnvoy, e.Name, api.LogSamples, e.NSamples)
	d.emit(api.Event{Kind: api.EventEnvoyRegistered, Envoy: e.Name, Message: fmt.Sprintf("%d samples", e.NSamples)})
	d.kickScheduler()
	return "", nil
}

// shapeMismatch explains why a shard's shapes are refused, or returns "".
func (d *Director) shapeMismatch(sample, target []string) string {
	if len(d.cfg.SampleShape) == 0 && len(d.cfg.TargetShape) == 0 {
		return ""
	}
	if !slices.Equal(sample, d.cfg.SampleShape) {
		return fmt.Sprintf("sample shape %v differs from the federation's %v", sample, d.cfg.SampleShape)
	}
	if !slices.Equal(target, d.cfg.TargetShape) {
		return fmt.Sprintf("target shape %v differs from the federation's %v", target, d.cfg.TargetShape)
	}
	return ""
}

// RemoveEnvoy forgets envoy name: its row and its liveness. It refuses
// (api.ErrRunning) while the envoy takes part in a running experiment:
// abort the job first, or its rounds would wait on an envoy the director
// no longer knows. The envoy's part in past experiments stays. An envoy
// that is still up is told at its next heartbeat that it is unknown, and
// registers again: removing is for sites that left, not a ban (that is
// the CA's business: stop issuing it certificates).
func (d *Director) RemoveEnvoy(ctx context.Context, who Caller, name string) error {
	if err := api.ValidateName("envoy name", name); err != nil {
		return err
	}
	// life keeps the scheduler from starting an experiment on the envoy
	// between the check and the removal.
	d.lc.life.Lock()
	defer d.lc.life.Unlock()
	if id := d.runningOf(name); id != "" {
		return fmt.Errorf("%w: envoy %s takes part in running job %s: abort the job first", api.ErrRunning, name, id)
	}
	if err := d.reg.remove(ctx, name); err != nil {
		return err
	}
	d.log.InfoContext(ctx, "envoy removed", api.LogEnvoy, name, api.LogCaller, who.Name)
	d.emit(api.Event{Kind: api.EventEnvoyRemoved, Envoy: name, Message: "removed by " + who.Name})
	return nil
}

// Heartbeat records that envoy name is alive and whether it runs an
// experiment. An unknown name is api.ErrNotFound, which tells the envoy to
// register again. stop names an ended experiment the envoy still runs (an
// abort, a failure elsewhere): the envoy should stop it.
//
// awaiting, if not empty, names the experiment that the envoy's site holds
// for its operator's approval; the job shows it as waiting for that site.
//
// devices, if not empty, is the envoy's GPU status (JSON of
// api.CUDADevice), which replaces the one it registered with.
func (d *Director) Heartbeat(ctx context.Context, name string, running bool, awaiting, devices string) (stop string, err error) {
	changed, err := d.reg.heartbeat(ctx, name, running, devices)
	if err != nil {
		return "", err
	}
	if awaiting != "" {
		if err := d.awaitApproval(ctx, awaiting, name); err != nil {
			return "", err
		}
	}
	if changed {
		d.kickScheduler()
	}
	if running {
		if id := d.latestOf(name); id != "" && d.runningOf(name) == "" {
			return id, nil
		}
	}
	return "", nil
}

// awaitApproval records that envoy's site holds experiment id for its
// operator's approval. It writes once per experiment and envoy, not on
// every heartbeat; an experiment that is not running or that the envoy does
// not take part in is ignored, as the heartbeat's stop answer handles it.
func (d *Director) awaitApproval(ctx context.Context, id, envoy string) error {
	exp := d.runningExperiment(id)
	if exp == nil || !exp.isParticipant(envoy) {
		return nil
	}
	exp.mu.Lock()
	first := !exp.awaiting[envoy] && !exp.training[envoy] && !exp.reported[envoy]
	if first {
		exp.awaiting[envoy] = true
	}
	round := exp.round
	exp.mu.Unlock()
	if !first {
		return nil
	}
	d.log.Info("site holds the job for its operator's approval", api.LogJob, id, api.LogEnvoy, envoy)
	err := d.db.SetEnvoyState(ctx, id, envoy, api.EnvoyAwaitingApproval, round, "waiting for the site operator to approve the job (envoy approve)")
	if errors.Is(err, api.ErrConflict) {
		return nil // its state is final already
	}
	return err
}

// awaitingApproval lists the envoys whose sites hold running experiment id
// for approval, by name.
func (d *Director) awaitingApproval(id string) []string {
	exp := d.runningExperiment(id)
	if exp == nil {
		return nil
	}
	exp.mu.Lock()
	defer exp.mu.Unlock()
	names := make([]string, 0, len(exp.awaiting))
	for n := range exp.awaiting {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// EnvoyView is a consistent copy of one envoy, as listings show it.
type EnvoyView struct {
	store.Envoy
	Online bool
	// Experiment is the running experiment the envoy takes part in, or "".
	Experiment string
}

// Envoys lists every envoy by name, with liveness judged now and the
// running experiment of each.
func (d *Director) Envoys() []EnvoyView {
	views := d.reg.list()
	running := d.runningByEnvoy()
	for i := range views {
		views[i].Experiment = running[views[i].Name]
	}
	return views
}

// EnvoysPage lists up to max envoys whose names sort after after, by
// name, as Envoys does; total is how many envoys there are in all, and more
// says whether others sort after the last one listed.
func (d *Director) EnvoysPage(after string, max int) (views []EnvoyView, total int, more bool) {
	views, total, more = d.reg.page(after, max)
	running := d.runningByEnvoy()
	for i := range views {
		views[i].Experiment = running[views[i].Name]
	}
	return views, total, more
}

// OpenArchive opens the archive of running experiment id for envoy, one of
// its participants, and returns it with the experiment and its signature.
// The caller closes the file.
func (d *Director) OpenArchive(ctx context.Context, id, envoy string) (*blob.Reader, store.Experiment, error) {
	exp := d.runningExperiment(id)
	if exp == nil {
		return nil, store.Experiment{}, fmt.Errorf("%w: no running experiment %q", api.ErrNotFound, id)
	}
	if !exp.isParticipant(envoy) {
		return nil, store.Experiment{}, fmt.Errorf("%w: %s is not a participant of experiment %s", api.ErrNotAllowed, envoy, id)
	}
	e, err := d.db.GetExperiment(ctx, id)
	if err != nil {
		return nil, store.Experiment{}, err
	}
	if e.Signature, err = d.db.JobSignature(ctx, id); err != nil {
		return nil, store.Experiment{}, err
	}
	f, err := d.openBlob(ctx, e.ArchivePath)
	if err != nil {
		return nil, store.Experiment{}, fmt.Errorf("open archive of %s: %w", id, err)
	}
	return f, e, nil
}

// EnvoyFailed fails running experiment id on behalf of envoy, one of its
// participants, with the envoy's code and description as the reason. Code
// api.CodeSiteRefused says the site refused the job (its policy or its
// operator): the envoy is marked refused and the job fails with the site's
// reason.
// Terminal states are final: a report for an ended experiment changes
// nothing.
func (d *Director) EnvoyFailed(ctx context.Context, id, envoy string, code uint32, desc string) error {
	exp := d.runningExperiment(id)
	if exp == nil {
		_, err := d.db.GetExperiment(ctx, id)
		return err // nil: already ended
	}
	if !exp.isParticipant(envoy) {
		return fmt.Errorf("%w: %s is not a participant of experiment %s", api.ErrNotAllowed, envoy, id)
	}
	if len(desc) > maxReasonLen {
		desc = desc[:maxReasonLen] + "..."
	}
	if code == api.CodeSiteRefused {
		// The site's own decision, not a fault: said as such. The site is
		// out of every round; the job goes on without it if its quorum
		// still can be reached.
		d.log.Warn("a site refused the job", api.LogJob, id, api.LogEnvoy, envoy, api.LogReason, desc)
		return d.missRound(ctx, exp, envoy, missFailed, true, fmt.Sprintf("site %s refused the job: %s", envoy, desc))
	}
	// Its training failed or timed out: it misses this round, and rejoins
	// when it asks for a task again.
	d.log.Warn("an envoy missed the round", api.LogJob, id, api.LogEnvoy, envoy, api.LogReason, desc)
	return d.missRound(ctx, exp, envoy, missFailed, false, fmt.Sprintf("envoy %s failed (code %d): %s", envoy, code, desc))
}
