package director

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/fedplane/fedplane/api"
)

// This file is the one participation rule of a round, whatever way a site
// misses it (offline, its training failed or timed out, its results were
// refused, its site refused the job):
//
//   - the round's members are the envoys sampled for it
//     (participants_per_round; all participants by default), less those
//     whose site refused the job;
//   - its quorum is min_envoys_per_round (all the members by default);
//   - it closes, and is aggregated, once the quorum has reported and every
//     member has either reported or missed it, or once its deadline has
//     passed with the quorum reported;
//   - it fails the job only when the quorum cannot be reached: at the
//     deadline, or as soon as too many members are out of the round for
//     good (training failed, results refused, site refused). An envoy that
//     is offline is not waited for, but is not out: it may come back;
//   - a member that missed the round asks for a task again and rejoins the
//     current round (or, once it closed, the next).

// missKind is how a member missed the round.
type missKind int

const (
	// missOffline: the envoy went offline; it may come back this round.
	missOffline missKind = iota + 1
	// missFailed: its training failed or timed out, or its results were
	// refused: out of this round unless it asks for the task again.
	missFailed
)

// miss records that envoy missed the current round.
type miss struct {
	kind   missKind
	reason string
}

// samplingSeed is the seed of experiment id's per-round sampling: job.json's
// sampling_seed, or one derived from the job id.
func samplingSeed(id string, given *int64) uint64 {
	if given != nil {
		return uint64(*given)
	}
	h := fnv.New64a()
	h.Write([]byte(id))
	return h.Sum64()
}

// sample picks the envoys that train round: PerRound of the participants
// whose site has not refused the job, online ones first, by a shuffle
// seeded with the job's seed and the round, so the same seed over the same
// envoys picks the same sample. It returns nil when every participant
// trains the round.
func (d *Director) sample(exp *experiment, round int) []string {
	pool := make([]string, 0, len(exp.participants))
	for _, p := range exp.participants {
		if !exp.refused[p] {
			pool = append(pool, p)
		}
	}
	k := exp.manifest.PerRound(len(exp.participants))
	if exp.manifest.ParticipantsPerRound <= 0 || k >= len(exp.participants) {
		return nil
	}
	slices.Sort(pool)
	rng := rand.New(rand.NewPCG(exp.seed, uint64(round)))
	rng.Shuffle(len(pool), func(i, j int) { pool[i], pool[j] = pool[j], pool[i] })
	// Online envoys first, keeping the shuffled order within each group.
	online := d.onlineSet()
	slices.SortStableFunc(pool, func(a, b string) int {
		switch oa, ob := online[a], online[b]; {
		case oa && !ob:
			return -1
		case ob && !oa:
			return 1
		}
		return 0
	})
	picked := pool[:min(k, len(pool))]
	slices.Sort(picked)
	return picked
}

// onlineSet is the names of the envoys online now.
func (d *Director) onlineSet() map[string]bool {
	out := map[string]bool{}
	for _, v := range d.reg.list() {
		if v.Online {
			out[v.Name] = true
		}
	}
	return out
}

// membersLocked returns the envoys that train the current round: the
// sample (every participant without one) less the sites that refused.
// e.mu is held.
func (e *experiment) membersLocked() []string {
	var out []string
	for _, p := range e.participants {
		if (e.sampled == nil || e.sampled[p]) && !e.refused[p] {
			out = append(out, p)
		}
	}
	return out
}

// inRoundLocked says whether envoy trains the current round. e.mu is held.
func (e *experiment) inRoundLocked(envoy string) bool {
	return (e.sampled == nil || e.sampled[envoy]) && !e.refused[envoy]
}

// quorum is the reports a round needs: min_envoys_per_round, or every
// envoy the round samples.
func (e *experiment) quorum() int {
	return e.manifest.Quorum(e.manifest.PerRound(len(e.participants)))
}

// verdict is what a round's state calls for.
type verdict int

const (
	keepWaiting verdict = iota
	closeRound
	failJob
)

// verdictLocked applies the participation rule to the current round.
// deadline says the round's deadline has passed. e.mu is held.
func (e *experiment) verdictLocked(deadline bool) (verdict, string) {
	members := e.membersLocked()
	quorum := e.quorum()
	var reported, out int
	var waiting, missing []string
	for _, p := range members {
		switch m, missed := e.missed[p]; {
		case len(e.pendingLocked(p)) == 0:
			reported++
		case missed && m.kind == missFailed:
			out++
			missing = append(missing, p)
		case missed:
			missing = append(missing, p)
		default:
			waiting = append(waiting, p)
			missing = append(missing, p)
		}
	}
	switch {
	case reported >= quorum && len(waiting) == 0:
		return closeRound, ""
	case deadline && reported >= quorum:
		return closeRound, ""
	case len(members)-out < quorum:
		return failJob, fmt.Sprintf("round %d cannot reach its quorum of %d: %s (%d of %d members reported, %d out of the round)",
			e.round, quorum, e.missReasonsLocked(missing), reported, len(members), out)
	case deadline:
		return failJob, fmt.Sprintf("round %d timed out after %v: %s (%d of %d reported; quorum %d)",
			e.round, e.manifest.RoundDeadline(), e.missReasonsLocked(missing), reported, len(members), quorum)
	}
	return keepWaiting, ""
}

// missReasonsLocked says why each of names has not reported. e.mu is held.
func (e *experiment) missReasonsLocked(names []string) string {
	parts := make([]string, 0, len(names))
	for _, n := range names {
		if m, ok := e.missed[n]; ok {
			parts = append(parts, m.reason)
		} else {
			parts = append(parts, n+" has not reported")
		}
	}
	var refused []string
	for p := range e.refused {
		refused = append(refused, p)
	}
	slices.Sort(refused)
	for _, p := range refused {
		if m, ok := e.missed[p]; ok {
			parts = append(parts, m.reason)
		} else {
			parts = append(parts, "site "+p+" refused the job")
		}
	}
	return strings.Join(parts, "; ")
}

// settle applies the participation rule to round of exp and acts on it:
// aggregate the round, fail the job, or wait. deadline says the round's
// deadline has passed.
func (d *Director) settle(ctx context.Context, exp *experiment, round int, deadline bool) {
	if d.draining() || d.runningExperiment(exp.id) == nil {
		return
	}
	exp.mu.Lock()
	if exp.round != round || exp.aggregating {
		exp.mu.Unlock()
		return
	}
	if deadline && len(exp.receiving) > 0 {
		// A report is arriving: let it land (or fail) rather than take an
		// envoy's results and then not count them.
		exp.mu.Unlock()
		d.armAfter(exp, round, receivingGrace)
		return
	}
	v, reason := exp.verdictLocked(deadline)
	var missing []string
	if v == closeRound {
		exp.aggregating = true
		for _, p := range exp.membersLocked() {
			if len(exp.pendingLocked(p)) > 0 {
				missing = append(missing, p)
			}
		}
	}
	exp.mu.Unlock()
	switch v {
	case closeRound:
		if len(missing) > 0 {
			d.log.Warn("round closes without some envoys", api.LogJob, exp.id, api.LogRound, round, api.LogMissing, missing)
		}
		d.aggregateAsync(exp, round)
	case failJob:
		if _, err := d.endExperiment(ctx, exp.id, api.JobFailed, reason); err != nil && !errors.Is(err, api.ErrConflict) {
			d.log.ErrorContext(ctx, "fail a job that cannot reach its quorum", api.LogJob, exp.id, api.LogErr, err)
		}
	}
}

// missRound records that envoy missed the current round of exp (state
// api.EnvoyMissed with the reason, or api.EnvoyRefused for good when its
// site refused the job), then settles the round.
func (d *Director) missRound(ctx context.Context, exp *experiment, envoy string, kind missKind, refused bool, reason string) error {
	exp.mu.Lock()
	round := exp.round
	state := api.EnvoyMissed
	switch {
	case refused:
		exp.refused[envoy] = true
		exp.missed[envoy] = miss{kind: kind, reason: reason} // for the job's reason
		state = api.EnvoyRefused
	case exp.reported[envoy] || !exp.inRoundLocked(envoy):
		// It reported the round already (a failure of a later step) or
		// does not train it: nothing is missed now.
		exp.mu.Unlock()
		return nil
	default:
		exp.missed[envoy] = miss{kind: kind, reason: reason}
	}
	exp.mu.Unlock()
	if err := d.db.SetEnvoyState(ctx, exp.id, envoy, state, round, reason); err != nil && !errors.Is(err, api.ErrConflict) {
		return err
	}
	d.notify(exp.id)
	d.settle(ctx, exp, round, false)
	return nil
}

// rejoinLocked takes envoy back into the current round after it missed
// it: it asks for a task again. e.mu is held.
func (e *experiment) rejoinLocked(envoy string) bool {
	if _, ok := e.missed[envoy]; !ok {
		return false
	}
	delete(e.missed, envoy)
	delete(e.training, envoy)
	return true
}
