package director

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/job"
	"github.com/fedplane/fedplane/store"
	"github.com/fedplane/fedplane/store/blob"
)

// This file is job.json's keep_models, so that a long job's storage does
// not grow without bound: once a round is committed, the round models the
// rule no longer keeps are marked pruned in one transaction and removed from
// disk after it commits. A crash in between leaves files no row references,
// which start-up's reconcile removes; a pruned row's missing file fails no
// job. And what a job holds on disk, for show-job.

// errPruned marks a request for a model keep_models had removed.
var errPruned = errors.New("model not kept")

// prunedModel is the error for a request for round's pruned model.
func prunedModel(id string, round int) error {
	return fmt.Errorf("%w: %w: the model of round %d of job %s was removed by its keep_models rule", api.ErrNotFound, errPruned, round, id)
}

// keptRounds returns the rounds whose models rule k keeps once round
// newest is committed, or nil when it keeps every one. newest is always
// kept: the round in progress trains from it, or it is the final model.
// best is the best round by best_metric (-1: none yet, or no best_metric:
// the best is the last). withPrev keeps newest-1 as well: the base of the
// deltas an OpenFL delta_updates collaborator asks for while round newest
// runs (GlobalTensor).
func keptRounds(k job.KeepModels, newest, best int, withPrev bool) map[int]bool {
	n := k.Newest()
	if n == 0 {
		return nil
	}
	keep := map[int]bool{}
	for r := max(0, newest-n+1); r <= newest; r++ {
		keep[r] = true
	}
	if withPrev && newest > 0 {
		keep[newest-1] = true
	}
	if k.Best() && best >= 0 {
		keep[best] = true
	}
	return keep
}

// applyRetention applies experiment exp's keep_models once round next's
// model is committed. It never fails the round: a model it could not prune
// stays until the next round's retention, and a file it could not remove
// is an orphan the next start removes.
func (d *Director) applyRetention(ctx context.Context, exp *experiment, next int) {
	running := next < exp.manifest.Rounds
	if err := d.retain(ctx, exp.id, exp.manifest, running); err != nil {
		d.log.WarnContext(ctx, "keep_models: pruning round models failed; they stay until the next round",
			api.LogJob, exp.id, api.LogRound, next, api.LogErr, err)
	}
}

// retain prunes the round models of experiment id that m's keep_models no
// longer keeps. running says whether a round is in progress, whose delta
// base (the previous round's model) OpenFL delta_updates collaborators may
// still read. Rounds left unpruned by an earlier failure or crash are
// pruned too: the rule is applied to every round, not only the latest.
func (d *Director) retain(ctx context.Context, id string, m *job.Manifest, running bool) error {
	k := m.KeepModels
	rounds, err := d.db.Rounds(ctx, id)
	if err != nil || len(rounds) == 0 {
		return err
	}
	newest := rounds[len(rounds)-1].Round
	best := -1
	if k.Best() && m.BestMetric != nil {
		ms, err := d.db.Metrics(ctx, id)
		if err != nil {
			return err
		}
		if r, ok := bestRound(ms, m.BestMetric); ok {
			best = r
		}
	}
	keep := keptRounds(k, newest, best, running && m.OpenFL != nil && m.OpenFL.DeltaUpdates)
	var prune []int
	for _, r := range rounds {
		if !r.Pruned() && !keep[r.Round] {
			prune = append(prune, r.Round)
		}
	}
	// Hook for the aggregator's state files (one per round): the state
	// only the next aggregation reads, that of round newest, is kept; a
	// store that records them returns the older ones from PruneRounds.
	files, err := d.db.PruneRounds(ctx, id, prune)
	if err != nil {
		return err
	}
	for _, f := range files {
		if err := d.blobs.Remove(context.WithoutCancel(ctx), blob.Key(f)); err != nil {
			// The row says pruned: the next start removes the file.
			d.log.WarnContext(ctx, "keep_models: removing a pruned model failed", api.LogJob, id, api.LogPath, f, api.LogErr, err)
		}
	}
	if len(files) == 0 {
		return nil
	}
	d.log.InfoContext(ctx, "round models pruned", api.LogJob, id, api.LogPruned, prune, api.LogKeep, k.String())
	return nil
}

// retainAll applies keep_models at start-up to the jobs a crash left
// between a round's commit and its retention.
func (d *Director) retainAll(ctx context.Context) error {
	ids, err := d.db.UnretainedExperiments(ctx)
	if err != nil {
		return err
	}
	for _, id := range ids {
		e, err := d.db.GetExperiment(ctx, id)
		if err != nil {
			return err
		}
		m, err := manifestOf(e)
		if err != nil {
			continue // a job that cannot be read is not this code's to fix
		}
		if err := d.retain(ctx, id, m, e.Status == api.JobInProgress); err != nil {
			return err
		}
	}
	return nil
}

// storage adds up what job e holds in the blob store: its folder under
// experiments/ (the archive, the round models kept, the reports of the
// round in progress, the aggregator's server state, anything else) and its
// logs. A listing that fails part way counts what it saw.
func (d *Director) storage(ctx context.Context, e store.Experiment, m *job.Manifest) *api.Storage {
	s := &api.Storage{KeepModels: m.KeepModels.String(), KeepIsDefault: m.KeepModels == ""}
	root := blob.Key(filepath.Join(experimentsDir, e.ID))
	d.blobs.List(ctx, root, func(b blob.Info) error {
		rel := strings.TrimPrefix(b.Key, root+"/")
		n := b.Size
		switch first, _, _ := strings.Cut(rel, "/"); {
		case rel == archiveFile:
			s.ArchiveBytes += n
		case first == "models" && strings.HasSuffix(rel, stateSuffix):
			s.StateBytes += n
		case first == "models" && strings.HasSuffix(rel, ".safetensors"):
			s.Models++
			s.ModelBytes += n
		case first == "results":
			s.ResultsBytes += n
		default:
			s.OtherBytes += n
		}
		return nil
	})
	d.blobs.List(ctx, blob.Key(filepath.Join(logsDir, e.ID)), func(b blob.Info) error {
		s.LogBytes += b.Size
		return nil
	})
	s.Bytes = s.ArchiveBytes + s.ModelBytes + s.StateBytes + s.ResultsBytes + s.LogBytes + s.OtherBytes
	return s
}
