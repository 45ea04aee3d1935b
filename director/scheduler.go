package director

import (
	"context"
	"slices"
	"time"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/store"
)

// kickScheduler asks the scheduler to look at the pending jobs now. It never
// blocks: one pending kick is as good as many.
func (d *Director) kickScheduler() {
	select {
	case d.kick <- struct{}{}:
	default:
	}
}

// runScheduler schedules on every kick and every interval until ctx ends.
func (d *Director) runScheduler(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-d.kick:
		case <-t.C:
			d.sweepHeldResults()
		}
		if err := d.schedule(ctx); err != nil && ctx.Err() == nil {
			d.log.ErrorContext(ctx, "schedule", api.LogErr, err)
		}
	}
}

// schedule starts every pending job, oldest first, whose envoys are online
// and free. A job naming its envoys waits for all of them; a job asking for
// min_envoys takes that many free ones, by name. Jobs run at once on
// disjoint envoys; an envoy is free when no running experiment has it and
// its heartbeat says no training process of an ended one is still alive.
func (d *Director) schedule(ctx context.Context) error {
	pending, err := d.db.ListExperiments(ctx, store.ExperimentFilter{Statuses: []api.JobStatus{api.JobPending}, NewestLast: true})
	if err != nil || len(pending) == 0 {
		return err
	}
	free := map[string]bool{}
	var freeNames []string
	for _, v := range d.reg.list() {
		if v.Online && !v.ExperimentRunning && d.runningOf(v.Name) == "" {
			free[v.Name] = true
			freeNames = append(freeNames, v.Name) // list() is sorted by name
		}
	}
	for _, e := range pending {
		if len(freeNames) == 0 {
			return nil
		}
		m, err := manifestOf(e)
		if err != nil {
			d.endExperiment(ctx, e.ID, api.JobFailed, err.Error())
			continue
		}
		var chosen []string
		if len(m.Envoys) > 0 {
			ok := true
			for _, name := range m.Envoys {
				ok = ok && free[name]
			}
			if !ok {
				continue
			}
			chosen = m.Envoys
		} else {
			if len(freeNames) < m.MinEnvoys {
				continue
			}
			chosen = append([]string(nil), freeNames[:m.MinEnvoys]...)
		}
		if err := d.startExperiment(ctx, e, m, chosen); err != nil {
			d.log.ErrorContext(ctx, "start experiment", api.LogJob, e.ID, api.LogErr, err)
			continue
		}
		for _, name := range chosen {
			delete(free, name)
		}
		freeNames = slices.DeleteFunc(freeNames, func(n string) bool { return !free[n] })
	}
	return nil
}
