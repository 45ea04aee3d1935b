package director

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/job"
	"github.com/fedplane/fedplane/store"
	"github.com/fedplane/fedplane/store/blob"
)

// This file answers what admins and frontends ask of jobs: find, list,
// show, abort, delete, and the director's status.

// FindJob resolves a job id or a unique prefix of at least api.MinIDPrefix
// characters, as users type them. A prefix that is too short or matches
// several jobs is api.ErrAmbiguous; none is api.ErrNotFound.
func (d *Director) FindJob(ctx context.Context, id string) (store.Experiment, error) {
	if len(id) < api.MinIDPrefix {
		return store.Experiment{}, fmt.Errorf("%w: job id %q is too short: give at least %d characters", api.ErrAmbiguous, id, api.MinIDPrefix)
	}
	e, err := d.db.FindExperiment(ctx, id)
	switch {
	case errors.Is(err, api.ErrNotFound):
		return e, fmt.Errorf("%w: no job with id %q", api.ErrNotFound, id)
	case errors.Is(err, api.ErrAmbiguous):
		return e, fmt.Errorf("%w: job id prefix %q matches more than one job; give more characters", api.ErrAmbiguous, id)
	}
	return e, err
}

// JobInfo is job e as admin replies carry it, without its envoys.
func (d *Director) JobInfo(e store.Experiment, withManifest bool) api.Job {
	j := api.Job{
		JobID: e.ID, Name: e.Name, Status: e.Status, Reason: e.Reason,
		Submitter: e.Submitter, SubmitterOrg: e.SubmitterOrg, SubmitterRole: e.SubmitterRole,
		SubmitTime: e.CreatedAt, StartTime: e.StartedAt, EndTime: e.FinishedAt, Duration: d.jobDuration(e),
		ArchiveSize: e.ArchiveSize, ArchiveSHA256: e.ArchiveSHA256, RoundsDone: e.RoundsDone, FolderName: e.FolderName,
	}
	if withManifest {
		j.Manifest = json.RawMessage(e.Manifest)
	}
	if m, err := manifestOf(e); err == nil {
		j.Rounds = m.Rounds
	}
	if e.Status == api.JobPending && j.Reason == "" {
		j.Reason = d.pendingReason(e)
	}
	if e.Status == api.JobInProgress && j.Reason == "" {
		if names := d.awaitingApproval(e.ID); len(names) > 0 {
			j.Reason = "waiting for approval at " + strings.Join(names, ", ")
		}
	}
	return j
}

// jobDuration is how long a job ran (so far): "-" before it starts.
func (d *Director) jobDuration(e store.Experiment) string {
	switch {
	case e.StartedAt.IsZero():
		return "-"
	case e.FinishedAt.IsZero():
		return d.cfg.Now().Sub(e.StartedAt).Round(time.Second).String()
	default:
		return e.FinishedAt.Sub(e.StartedAt).Round(time.Second).String()
	}
}

// ListJobs lists jobs with their progress, in one query.
func (d *Director) ListJobs(ctx context.Context, f store.ExperimentFilter) ([]api.Job, error) {
	exps, err := d.db.ListExperiments(ctx, f)
	if err != nil {
		return nil, err
	}
	jobs := make([]api.Job, 0, len(exps))
	for _, e := range exps {
		jobs = append(jobs, d.JobInfo(e, false))
	}
	return jobs, nil
}

// JobDetail is job e with its job.json and each envoy's state.
func (d *Director) JobDetail(ctx context.Context, e store.Experiment) (api.Job, error) {
	j := d.JobInfo(e, true)
	parts, err := d.db.ExperimentEnvoys(ctx, e.ID)
	if err != nil {
		return api.Job{}, err
	}
	for _, p := range parts {
		j.Envoys = append(j.Envoys, api.Participant{Name: p.Envoy, Status: p.Status, Round: p.Round, Reason: p.Reason, Updated: p.UpdatedAt})
	}
	if m, err := manifestOf(e); err == nil {
		j.Participation = d.participation(e, m, len(parts))
		j.Storage = d.storage(ctx, e, m)
	}
	return j, nil
}

// participation is job e's participation rule as show-job tells it, with
// the defaults filled in. n is its participants once it runs.
func (d *Director) participation(e store.Experiment, m *job.Manifest, n int) *api.Participation {
	if n == 0 {
		n = m.Participants()
	}
	k := m.PerRound(n)
	p := &api.Participation{PerRound: k, Participants: n, Quorum: m.Quorum(k),
		RoundDeadline: m.RoundDeadline().String(), DeadlineIsDefault: m.RoundTimeout == 0}
	if m.ParticipantsPerRound > 0 && k < n {
		seed := samplingSeed(e.ID, m.SamplingSeed)
		p.SamplingSeed = &seed
		if exp := d.runningExperiment(e.ID); exp != nil {
			exp.mu.Lock()
			for name := range exp.sampled {
				p.Sampled = append(p.Sampled, name)
			}
			exp.mu.Unlock()
			slices.Sort(p.Sampled)
		}
	}
	return p
}

// AbortJob aborts job e for who, if who may manage it. A job that has
// ended is api.ErrNotRunning.
func (d *Director) AbortJob(ctx context.Context, who Caller, e store.Experiment) (store.Experiment, error) {
	if err := canManage(who, e); err != nil {
		return store.Experiment{}, err
	}
	aborted, err := d.endExperiment(ctx, e.ID, api.JobAborted, "aborted by "+who.Name)
	if errors.Is(err, api.ErrConflict) {
		cur, err := d.db.GetExperiment(ctx, e.ID)
		if err != nil {
			return store.Experiment{}, err
		}
		return store.Experiment{}, fmt.Errorf("%w: job %s is %s: only a pending or running job can be aborted", api.ErrNotRunning, cur.ID, cur.Status)
	}
	return aborted, err
}

// DeleteJob removes job e for who, if who may manage it and it does not
// run: its rows, then its files (a crash in between leaves files that
// start-up removes).
func (d *Director) DeleteJob(ctx context.Context, who Caller, e store.Experiment) error {
	if err := canManage(who, e); err != nil {
		return err
	}
	err := d.db.DeleteExperiment(ctx, e.ID, api.JobInProgress)
	if errors.Is(err, api.ErrConflict) {
		return fmt.Errorf("%w: job %s is running: abort it before deleting it", api.ErrRunning, e.ID)
	}
	if err != nil {
		return err
	}
	if err := d.blobs.RemovePrefix(context.WithoutCancel(ctx), blob.Key(filepath.Join(experimentsDir, e.ID))); err != nil {
		d.log.ErrorContext(ctx, "remove job files", api.LogJob, e.ID, api.LogErr, err)
	}
	d.removeLogs(ctx, e.ID)
	d.notify(e.ID) // ends metric streams of the job, which find it gone
	d.log.InfoContext(ctx, "job deleted", api.LogJob, e.ID)
	d.emit(api.Event{Kind: api.EventJobDeleted, Job: e.ID, JobName: e.Name, Message: "deleted by " + who.Name})
	return nil
}

// LookupExperiment resolves the experiment name an OpenFL frontend passes,
// among the experiments who may see; others are api.ErrNotFound, as if
// they did not exist. The name may be a job id, a unique id prefix of at
// least api.MinIDPrefix characters, or a job name (the newest job of that
// name). Database errors are returned as they are.
func (d *Director) LookupExperiment(ctx context.Context, who Caller, name string) (store.Experiment, error) {
	if name == "" {
		return store.Experiment{}, fmt.Errorf("%w: experiment name is empty", api.ErrInvalid)
	}
	e, err := d.lookupExperiment(ctx, name)
	if err != nil {
		return e, err
	}
	if !who.CanView() {
		return store.Experiment{}, fmt.Errorf("%w: no experiment %q", api.ErrNotFound, name)
	}
	return e, nil
}

func (d *Director) lookupExperiment(ctx context.Context, name string) (store.Experiment, error) {
	e, err := d.db.GetExperiment(ctx, name)
	if !errors.Is(err, api.ErrNotFound) {
		return e, err
	}
	if len(name) >= api.MinIDPrefix {
		e, err := d.db.FindExperiment(ctx, name)
		if !errors.Is(err, api.ErrNotFound) && !errors.Is(err, api.ErrAmbiguous) {
			return e, err
		}
	}
	exps, err := d.db.ListExperiments(ctx, store.ExperimentFilter{Name: name, Max: 1})
	if err != nil {
		return store.Experiment{}, err
	}
	if len(exps) == 0 {
		return store.Experiment{}, fmt.Errorf("%w: no experiment %q", api.ErrNotFound, name)
	}
	return exps[0], nil
}

// VisibleExperiments lists, oldest first and in one query, the experiments
// who may see.
func (d *Director) VisibleExperiments(ctx context.Context, who Caller) ([]store.Experiment, error) {
	if !who.CanView() {
		return nil, nil
	}
	return d.db.ListExperiments(ctx, store.ExperimentFilter{NewestLast: true})
}

// Progress is how far experiment e is: rounds aggregated of its total.
func (d *Director) Progress(e store.Experiment) (done, total int) {
	m, err := manifestOf(e)
	if err != nil || m.Rounds == 0 {
		return 0, 0
	}
	done = e.RoundsDone
	if e.Status == api.JobFinished {
		done = m.Rounds
	}
	return done, m.Rounds
}

// Participants returns each envoy's state in experiment e; before it
// starts, none.
func (d *Director) Participants(ctx context.Context, e store.Experiment) ([]store.ExperimentEnvoy, error) {
	return d.db.ExperimentEnvoys(ctx, e.ID)
}

// PlannedEnvoys is how many envoys experiment e takes part with: those
// chosen once it started, job.json's count before.
func (d *Director) PlannedEnvoys(e store.Experiment) int {
	if e.Participants > 0 {
		return e.Participants
	}
	if m, err := manifestOf(e); err == nil {
		return m.Participants()
	}
	return 0
}

// Status is the director's version, uptime and counts.
func (d *Director) Status(ctx context.Context) (api.DirectorStatus, error) {
	counts, err := d.db.CountExperiments(ctx)
	if err != nil {
		return api.DirectorStatus{}, err
	}
	total, online, _ := d.reg.count()
	return api.DirectorStatus{
		Version: d.cfg.Version, Uptime: d.cfg.Now().Sub(d.started).Round(time.Second).String(), StartTime: d.started,
		Envoys: total, EnvoysOnline: online, Jobs: counts,
	}, nil
}

// RoundTasks lists the tasks every participant of e runs each round, in
// order: its OpenFL plan's task group (fromPlan), or fedplane's one train
// task.
func (d *Director) RoundTasks(e store.Experiment) (tasks []job.Task, fromPlan bool) {
	if m, err := manifestOf(e); err == nil && m.OpenFL != nil {
		return m.OpenFL.Tasks, true
	}
	return []job.Task{{Name: TaskTrain, Function: TaskTrain, Type: job.TaskTypeTrain}}, false
}

// maxNamesShown bounds the envoy names a pending job's reason lists.
const maxNamesShown = 5

// pendingReason says what pending job e waits for, judged now: the named
// envoys that are not online and free, or how many free envoys min_envoys
// needs against how many there are; "" once it can start (the scheduler
// takes it on its next pass).
func (d *Director) pendingReason(e store.Experiment) string {
	m, err := manifestOf(e)
	if err != nil {
		return ""
	}
	views := d.reg.list()
	running := d.runningByEnvoy()
	if len(m.Envoys) > 0 {
		byName := make(map[string]EnvoyView, len(views))
		for _, v := range views {
			byName[v.Name] = v
		}
		var waits []string
		for _, name := range m.Envoys {
			v, ok := byName[name]
			switch {
			case !ok:
				waits = append(waits, name+" (not registered)")
			case !v.Online:
				waits = append(waits, name+" (offline)")
			case running[name] != "":
				waits = append(waits, name+" (busy with job "+short(running[name])+")")
			case v.ExperimentRunning:
				waits = append(waits, name+" (still stopping a job)")
			}
		}
		if len(waits) == 0 {
			return ""
		}
		return "waits for " + listNames(waits)
	}
	var free []string
	online := 0
	for _, v := range views {
		if v.Online {
			online++
			if running[v.Name] == "" && !v.ExperimentRunning {
				free = append(free, v.Name)
			}
		}
	}
	if len(free) >= m.MinEnvoys {
		return ""
	}
	noun := "envoys"
	if m.MinEnvoys == 1 {
		noun = "envoy"
	}
	reason := fmt.Sprintf("needs %d %s, %d free of %d online", m.MinEnvoys, noun, len(free), online)
	if len(free) > 0 {
		reason += ": " + listNames(free)
	}
	if len(views) < m.MinEnvoys {
		reason += fmt.Sprintf("; only %d registered", len(views))
	}
	return reason
}

// listNames joins names, the first maxNamesShown of them.
func listNames(names []string) string {
	if len(names) <= maxNamesShown {
		return strings.Join(names, ", ")
	}
	return strings.Join(names[:maxNamesShown], ", ") + fmt.Sprintf(" and %d more", len(names)-maxNamesShown)
}

// short is a job id's first characters, as users type them.
func short(id string) string {
	if len(id) > api.MinIDPrefix {
		return id[:api.MinIDPrefix]
	}
	return id
}
