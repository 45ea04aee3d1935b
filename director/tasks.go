package director

import (
	"bytes"
	"context"
	"fmt"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/job"
	"github.com/fedplane/fedplane/store"
	"github.com/fedplane/fedplane/tensor"
)

// This file holds the tasks of a round beyond fedplane's one train task:
// an OpenFL workspace's task group (job.OpenFL), whose validation tasks
// each collaborator reports besides its training. A round closes when
// every participant has reported every task of the group.
//
// Which validation tasks an envoy has reported is kept in memory, beside
// the train task's results in the store. After a director restart the
// validation tasks of the current round are handed out again: at worst a
// round gets duplicate validation metrics, never a wrong model, since the
// model comes from the train task's stored results alone.

// trainTask is fedplane's own task list: the job's train.command.
var trainTask = []job.Task{{Name: TaskTrain, Function: TaskTrain, Type: job.TaskTypeTrain}}

// tasks is the task group every participant runs each round.
func (e *experiment) tasks() []job.Task {
	if e.manifest.OpenFL == nil {
		return trainTask
	}
	return e.manifest.OpenFL.Tasks
}

// trainTaskName is the name the train task's metrics are recorded under.
func (e *experiment) trainTaskName() string {
	if e.manifest.OpenFL == nil {
		return TaskTrain
	}
	return e.manifest.OpenFL.TrainTask().Name
}

// pendingLocked returns the tasks envoy has not reported in the round, in
// the group's order. e.mu is held.
func (e *experiment) pendingLocked(envoy string) []job.Task {
	var out []job.Task
	for _, t := range e.tasks() {
		if t.Type == job.TaskTypeTrain && !e.reported[envoy] || t.Type == job.TaskTypeValidate && !e.validated[envoy][t.Name] {
			out = append(out, t)
		}
	}
	return out
}

// metricSum is a metric's data_size-weighted sum over a round's reports.
type metricSum struct {
	task, name    string
	sum, weight   float64
	values, count float64 // plain sum and count, when every weight is 0
}

// validationMetricsLocked returns the aggregator's metrics of the round's
// validation tasks: each metric's mean weighted by the reports' data_size
// (OpenFL's aggregator weighs them so), or its plain mean when no report
// counted any sample. e.mu is held.
func (e *experiment) validationMetricsLocked(round int) []store.Metric {
	out := make([]store.Metric, 0, len(e.valOrder))
	for _, k := range e.valOrder {
		s := e.valSums[k]
		v := s.values / s.count
		if s.weight > 0 {
			v = s.sum / s.weight
		}
		out = append(out, store.Metric{ExperimentID: e.id, Round: round, Origin: api.OriginAggregator, Task: s.task, Name: s.name, Value: v})
	}
	return out
}

// maxValidationResults bounds a validation task's report, which holds
// metric tensors only: a few dozen bytes each.
const maxValidationResults = resultsHeaderMax

// reportValidation takes an envoy's report of a validation task of an
// OpenFL task group: its metric tensors only. prefix holds the stream's
// first bytes; whole tells whether they are all of it. The report's
// metrics are recorded under the task's name, and the round closes if
// this was the last task of the round.
//
// OpenFL's collaborator sends its validation data size as data_size (0 for
// a shard without validation data, -1 for a task whose name says neither
// train nor valid), so any data_size from -1 up is taken; it only weighs
// the round's mean of the metrics, and a negative one counts as 0.
func (d *Director) reportValidation(ctx context.Context, exp *experiment, rep Report, t job.Task, h tensor.TaskResultsHeader, prefix []byte, whole bool) (Report, error) {
	if !whole {
		return rep, fmt.Errorf("%w: the results of validation task %q exceed %d bytes; a validation sends metrics only", api.ErrTooLarge, t.Name, maxValidationResults)
	}
	if h.DataSize < -1 {
		return rep, fmt.Errorf("%w: data_size is %d; a validation task's must be -1 or more", api.ErrInvalid, h.DataSize)
	}
	res, err := tensor.ReadTaskResults(bytes.NewReader(prefix), int64(len(prefix)))
	if err != nil {
		return rep, fmt.Errorf("%w: task results: %w", api.ErrInvalid, err)
	}
	if n := len(res.Model.Tensors); n > 0 {
		return rep, fmt.Errorf("%w: validation task %q sent %d model tensors; it sends metrics only", api.ErrInvalid, t.Name, n)
	}
	if got := res.Header; got.Sender != h.Sender || got.FederationUUID != h.FederationUUID || got.Round != h.Round || got.DataSize != h.DataSize || got.TaskName != h.TaskName {
		return rep, fmt.Errorf("%w: task results: the header changes after the tensors", api.ErrInvalid)
	}
	if err := tensor.CheckFinite(res.Model); err != nil {
		return rep, fmt.Errorf("%w: results of %s: %w", api.ErrInvalid, rep.Envoy, err)
	}
	for _, m := range res.Metrics {
		if v := float64(m.Value); v != v || v > 3.4e38 || v < -3.4e38 {
			return rep, fmt.Errorf("%w: metric %q of %s is not finite", api.ErrInvalid, m.Name, rep.Envoy)
		}
	}
	name, round := rep.Envoy, rep.Round

	// Claim the report, as the train task's is claimed: once per task and
	// round, never into a round that moved on.
	exp.mu.Lock()
	cur, closing := exp.round, exp.aggregating
	key := name + "\x00" + t.Name
	already, busy := exp.validated[name][t.Name], exp.receiving[key]
	claimed := round == cur && !already && !busy && !closing
	if claimed {
		exp.receiving[key] = true
	}
	exp.mu.Unlock()
	switch {
	case round != cur:
		return rep, fmt.Errorf("%w: results are for round %d, the current round is %d", api.ErrConflict, round, cur)
	case already || busy:
		return rep, fmt.Errorf("%w: %s already reported task %q of round %d", api.ErrAlreadyExists, name, t.Name, round)
	case closing:
		return rep, fmt.Errorf("%w: round %d closed without %s's task %q", api.ErrConflict, round, name, t.Name)
	}
	defer func() {
		exp.mu.Lock()
		delete(exp.receiving, key)
		exp.mu.Unlock()
	}()

	metrics := make([]store.Metric, 0, len(res.Metrics))
	for _, m := range res.Metrics {
		metrics = append(metrics, store.Metric{ExperimentID: exp.id, Round: round, Origin: name, Task: t.Name, Name: m.Name, Value: float64(m.Value)})
	}
	if err := d.db.RecordMetrics(ctx, exp.id, metrics); err != nil {
		return rep, err
	}
	d.log.InfoContext(ctx, "validation results received", api.LogJob, exp.id, api.LogEnvoy, name, api.LogRound, round, api.LogTask, t.Name, api.LogDataSize, h.DataSize)
	d.notify(exp.id)

	weight := float64(max(h.DataSize, 0))
	exp.mu.Lock()
	if exp.round == round {
		if exp.validated[name] == nil {
			exp.validated[name] = map[string]bool{}
		}
		exp.validated[name][t.Name] = true
		for _, m := range res.Metrics {
			k := t.Name + "\x00" + m.Name
			s := exp.valSums[k]
			if s == nil {
				s = &metricSum{task: t.Name, name: m.Name}
				exp.valSums[k] = s
				exp.valOrder = append(exp.valOrder, k)
			}
			s.sum += float64(m.Value) * weight
			s.weight += weight
			s.values += float64(m.Value)
			s.count++
		}
	}
	exp.mu.Unlock()
	d.settle(ctx, exp, round, false)
	return rep, nil
}
