package director

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/job"
	"github.com/fedplane/fedplane/store"
	"github.com/fedplane/fedplane/store/blob"
	"github.com/fedplane/fedplane/tensor"
)

// Which trained model a caller wants.
const (
	ModelBest = "best"
	ModelLast = "last"
)

// changes returns a channel closed at the next change (a metric, a round, a
// status) of experiment id. Take it before reading the state it guards, so
// no change falls between the read and the wait.
func (d *Director) changes(id string) <-chan struct{} {
	d.lc.mu.Lock()
	defer d.lc.mu.Unlock()
	ch, ok := d.lc.changed[id]
	if !ok {
		ch = make(chan struct{})
		d.lc.changed[id] = ch
	}
	return ch
}

// notify wakes whoever waits for a change of experiment id.
func (d *Director) notify(id string) {
	d.lc.mu.Lock()
	defer d.lc.mu.Unlock()
	if ch, ok := d.lc.changed[id]; ok {
		close(ch)
		delete(d.lc.changed, id)
	}
}

// StreamMetrics sends the metrics of the experiment an OpenFL frontend
// names (see LookupExperiment), those stored so far and then each as it
// arrives, until the experiment has ended and everything it stored was
// sent, ctx ends, or the director drains.
func (d *Director) StreamMetrics(ctx context.Context, who Caller, name string, send func(store.Metric) error) error {
	e, err := d.LookupExperiment(ctx, who, name)
	if err != nil {
		return err
	}
	return d.streamMetrics(ctx, e.ID, send)
}

func (d *Director) streamMetrics(ctx context.Context, id string, send func(store.Metric) error) error {
	var seq int64
	for {
		ch := d.changes(id)
		e, err := d.db.GetExperiment(ctx, id)
		if err != nil {
			return err
		}
		ms, err := d.db.MetricsAfter(ctx, id, seq)
		if err != nil {
			return err
		}
		for _, m := range ms {
			if err := send(m); err != nil {
				return err
			}
			seq = m.Seq
		}
		if e.Status.Terminal() {
			d.notify(id) // drop the channel taken above: nothing will close it
			return nil   // e was read before ms: nothing can follow
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-d.stopping:
			return errStopping
		}
	}
}

// trainedModel picks a job's model: the last is the newest global model (the
// final one once the job finished); the best is the global model of the
// round whose aggregated best_metric was best. A round's metrics describe
// the global model that round trained from (OpenFL's convention: the
// training command validates the model it receives). Without best_metric,
// or before any metric, the best is the last. A best model keep_models
// did not keep is api.ErrNotFound (and errPruned).
func (d *Director) trainedModel(ctx context.Context, e store.Experiment, which string) (store.Round, error) {
	rounds, err := d.db.Rounds(ctx, e.ID)
	if err != nil {
		return store.Round{}, err
	}
	if len(rounds) == 0 {
		return store.Round{}, fmt.Errorf("%w: job %s has no model", api.ErrNotFound, e.ID)
	}
	last := rounds[len(rounds)-1]
	if which == ModelLast {
		return last, nil
	}
	m, err := manifestOf(e)
	if err != nil || m.BestMetric == nil {
		return last, err
	}
	ms, err := d.db.Metrics(ctx, e.ID)
	if err != nil {
		return store.Round{}, err
	}
	best, found := bestRound(ms, m.BestMetric)
	if !found {
		return last, nil
	}
	for _, r := range rounds {
		if r.Round == best {
			if r.Pruned() {
				return r, fmt.Errorf("best model: %w (keep_models is %q)", prunedModel(e.ID, best), m.KeepModels.String())
			}
			return r, nil
		}
	}
	return last, nil
}

// bestRound is the round whose aggregated metric bm is best, of the
// metrics ms; found is false before any such metric. The earliest round
// wins a tie.
func bestRound(ms []store.Metric, bm *job.BestMetric) (round int, found bool) {
	var bestValue float64
	for _, x := range ms {
		if x.Origin != api.OriginAggregator || x.Name != bm.Name {
			continue
		}
		better := x.Value > bestValue
		if bm.Mode == "min" {
			better = x.Value < bestValue
		}
		if !found || better {
			round, bestValue, found = x.Round, x.Value, true
		}
	}
	return round, found
}

// modelAttempts bounds how often a reader of a trained model picks it
// again when the file it picked was pruned under it: a round committed
// meanwhile, and keep_models removed the model that was the last.
const modelAttempts = 3

// openTrainedModel picks job e's best or last model (trainedModel) and
// opens it, picking again when the file was pruned between the pick and
// the open. The caller closes the Reader.
func (d *Director) openTrainedModel(ctx context.Context, e store.Experiment, which string) (store.Round, *blob.Reader, error) {
	for i := 0; ; i++ {
		r, err := d.trainedModel(ctx, e, which)
		if err != nil {
			return r, nil, err
		}
		f, err := d.openBlob(ctx, r.ModelPath)
		if errors.Is(err, fs.ErrNotExist) && i+1 < modelAttempts {
			continue
		}
		return r, f, err
	}
}

// OpenTrainedModel opens the best or the last model of the experiment an
// OpenFL frontend names (see trainedModel), for a caller who may manage
// the job (as download_job). The caller closes the file.
func (d *Director) OpenTrainedModel(ctx context.Context, who Caller, name string, which string) (*tensor.Index, *blob.Reader, error) {
	e, err := d.LookupExperiment(ctx, who, name)
	if err != nil {
		return nil, nil, err
	}
	// A model is a job's result: it needs what download_job needs.
	if err := canManage(who, e); err != nil {
		return nil, nil, err
	}
	r, f, err := d.openTrainedModel(ctx, e, which)
	if err != nil {
		return nil, nil, err
	}
	x, _, err := tensor.ReadSafetensors(f, f.Size())
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("model of round %d: %s: %w", r.Round, r.ModelPath, err)
	}
	return x, f, nil
}

// Metrics returns job e's metrics stored after the sequence number after.
func (d *Director) Metrics(ctx context.Context, e store.Experiment, after int64) ([]api.Metric, error) {
	ms, err := d.db.MetricsAfter(ctx, e.ID, after)
	if err != nil {
		return nil, err
	}
	out := make([]api.Metric, 0, len(ms))
	for _, m := range ms {
		out = append(out, api.Metric{Seq: m.Seq, Round: m.Round, Origin: m.Origin, Task: m.Task, Name: m.Name, Value: m.Value, Time: m.Time})
	}
	return out, nil
}

// ResultsBundle lays out job e's results for who, if who may manage it,
// in a fresh folder (see writeBundle) that the caller removes.
func (d *Director) ResultsBundle(ctx context.Context, who Caller, e store.Experiment) (string, error) {
	if err := canManage(who, e); err != nil {
		return "", err
	}
	return d.writeBundle(ctx, e)
}

// writeBundle lays out a job's results in a fresh folder under tmp/ and
// returns it: job.json, status.json, metrics.csv, models/last.safetensors
// and models/best.safetensors (with best_metric). Models are hard links to
// the stored files where the file system allows, copies otherwise. The
// caller removes the folder.
func (d *Director) writeBundle(ctx context.Context, e store.Experiment) (string, error) {
	if err := os.MkdirAll(filepath.Join(d.cfg.DataDir, tmpDir), 0o700); err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp(filepath.Join(d.cfg.DataDir, tmpDir), "results-")
	if err != nil {
		return "", err
	}
	fail := func(err error) (string, error) {
		os.RemoveAll(dir)
		return "", err
	}
	var manifest any
	if err := json.Unmarshal([]byte(e.Manifest), &manifest); err != nil {
		return fail(err)
	}
	if err := writeJSONFile(filepath.Join(dir, job.ManifestFile), manifest); err != nil {
		return fail(err)
	}
	parts, err := d.db.ExperimentEnvoys(ctx, e.ID)
	if err != nil {
		return fail(err)
	}
	rounds, err := d.db.Rounds(ctx, e.ID)
	if err != nil {
		return fail(err)
	}
	m, err := manifestOf(e)
	if err != nil {
		return fail(err)
	}
	st := d.JobInfo(e, false)
	st.Envoys = []api.Participant{}
	for _, p := range parts {
		st.Envoys = append(st.Envoys, api.Participant{Name: p.Envoy, Status: p.Status, Round: p.Round, Reason: p.Reason, Updated: p.UpdatedAt})
	}
	if err := os.MkdirAll(filepath.Join(dir, "models"), 0o700); err != nil {
		return fail(err)
	}
	if len(rounds) > 0 {
		_, err := d.bundleModel(ctx, e, ModelLast, filepath.Join(dir, "models", "last.safetensors"))
		if err != nil {
			return fail(err)
		}
		if m.BestMetric != nil {
			best, err := d.bundleModel(ctx, e, ModelBest, filepath.Join(dir, "models", "best.safetensors"))
			if err != nil && !errors.Is(err, errPruned) {
				return fail(err)
			}
			// With keep_models "last" the best round's model is gone and
			// the bundle has no best.safetensors: status.json names the
			// round all the same.
			st.BestRound = &best.Round
		}
	}
	if err := writeJSONFile(filepath.Join(dir, "status.json"), st); err != nil {
		return fail(err)
	}
	if err := d.writeMetricsCSV(ctx, e.ID, filepath.Join(dir, "metrics.csv")); err != nil {
		return fail(err)
	}
	return dir, nil
}

func (d *Director) writeMetricsCSV(ctx context.Context, id, path string) error {
	ms, err := d.db.Metrics(ctx, id)
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	w.Write([]string{"round", "origin", "task", "name", "value", "time"})
	for _, m := range ms {
		w.Write([]string{strconv.Itoa(m.Round), m.Origin, m.Task, m.Name,
			strconv.FormatFloat(m.Value, 'g', -1, 64), m.Time.Format(time.RFC3339Nano)})
	}
	w.Flush()
	return errors.Join(w.Error(), f.Close())
}

func writeJSONFile(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o600)
}

// bundleModel puts job e's best or last model at dst: a hard link to the
// stored file (or to its cached copy, from an S3 store) where the file
// system allows, a copy otherwise.
func (d *Director) bundleModel(ctx context.Context, e store.Experiment, which, dst string) (store.Round, error) {
	r, f, err := d.openTrainedModel(ctx, e, which)
	if err != nil {
		return r, err
	}
	defer f.Close()
	return r, linkOrCopy(f, dst)
}

// linkOrCopy makes dst a hard link to src's local file, or a copy where
// links fail.
func linkOrCopy(src *blob.Reader, dst string) error {
	if err := os.Link(src.LocalPath(), dst); err == nil {
		return nil
	}
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, io.NewSectionReader(src, 0, src.Size())); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
