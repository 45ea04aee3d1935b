package director

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/director/metrics"
	"github.com/fedplane/fedplane/store"
	"github.com/fedplane/fedplane/store/blob"
)

// This file keeps the training logs that envoys share (site policy
// share_logs, envoy start --share-logs): the latest copy per job and
// envoy, as the blob logs/<job id>/<envoy>.log (a file under the data
// dir, or an object of the bucket), replaced by each upload and removed
// with the job. They are not under
// experiments/, whose files the start-up's reconcile keeps only when a row
// names them; logs/ has no rows, and start-up removes the folders of jobs
// that are gone (removeOrphanLogs).

const (
	logsDir    = "logs"
	logSuffix  = ".log"
	maxLogWait = 20 * time.Second
)

// trainLogs is what the director knows of shared logs in memory: which
// envoys said, in their last heartbeat, that their site shares logs,
// which logs admins asked for (sent to the envoy in its next heartbeat
// reply), and a count of uploads stored per log, which waiting admins
// watch.
type trainLogs struct {
	mu      sync.RWMutex
	shares  map[string]bool
	asked   map[string][]string // envoy -> job ids
	stored  map[logKey]int
	changed chan struct{} // closed and replaced at every upload stored
}

type logKey struct{ job, envoy string }

// LogHeartbeat records whether envoy's site shares training logs, as its
// heartbeat says, and returns the jobs whose log an admin has asked it for
// since its last heartbeat: the heartbeat's reply names them. Call it once
// the heartbeat is accepted (the envoy is known and authenticated).
func (d *Director) LogHeartbeat(envoy string, shares bool) (send []string) {
	l := &d.logs
	// Most envoys share nothing and are asked nothing: a read lock
	// spares the heartbeat path any contention.
	l.mu.RLock()
	idle := !l.shares[envoy] && len(l.asked[envoy]) == 0
	l.mu.RUnlock()
	if idle && !shares {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.shares == nil {
		l.shares = map[string]bool{}
	}
	if shares {
		l.shares[envoy] = true
	} else {
		delete(l.shares, envoy)
	}
	send = l.asked[envoy]
	delete(l.asked, envoy)
	if !shares {
		return nil
	}
	return send
}

// logPath is where the latest copy of envoy's log of job id is kept,
// relative to the data dir (its blob's key). Both names have passed
// api.ValidateName (a job id is a row's): no separator, no leading dot.
func logPath(id, envoy string) string {
	return filepath.Join(logsDir, id, envoy+logSuffix)
}

// participates reports whether envoy takes or took part in job id.
func (d *Director) participates(ctx context.Context, id, envoy string) (bool, error) {
	parts, err := d.db.ExperimentEnvoys(ctx, id)
	if err != nil {
		return false, err
	}
	return slices.ContainsFunc(parts, func(p store.ExperimentEnvoy) bool { return p.Envoy == envoy }), nil
}

// ReceiveLog stores envoy's training log of job id, size bytes that write
// copies into the writer it is given, as the latest copy: into a temp
// file, fsynced and renamed over the one before. The job must exist and
// envoy take part in it, checked before a byte is read; size must be at
// most api.MaxSharedLog. write must write exactly size bytes, no more
// (it checks, as it reads from the peer).
func (d *Director) ReceiveLog(ctx context.Context, envoy, id string, size int64, write func(io.Writer) (int64, error)) error {
	if err := api.ValidateName("envoy_name", envoy); err != nil {
		return err
	}
	if err := api.ValidateName("experiment_name", id); err != nil {
		return err
	}
	if size < 0 || size > api.MaxSharedLog {
		return fmt.Errorf("%w: a training log of %d bytes; at most %d are taken", api.ErrTooLarge, size, api.MaxSharedLog)
	}
	if _, err := d.db.GetExperiment(ctx, id); err != nil {
		return err
	}
	ok, err := d.participates(ctx, id, envoy)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("%w: envoy %s takes no part in experiment %s", api.ErrNotAllowed, envoy, id)
	}
	tmp, err := d.createTemp("log-*")
	if err != nil {
		return err
	}
	n, err := write(tmp)
	if err == nil && n != size {
		err = fmt.Errorf("%w: training log of %d bytes announced, %d received", api.ErrDataLoss, size, n)
	}
	if err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return err
	}
	if err := d.commitFile(ctx, tmp, logPath(id, envoy)); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	os.Remove(tmp.Name()) // a no-op once renamed; an S3 store has uploaded it
	// A job deleted meanwhile takes its logs with it.
	if _, err := d.db.GetExperiment(ctx, id); errors.Is(err, api.ErrNotFound) {
		d.removeLogs(ctx, id)
		return err
	}
	d.Prometheus().Received(metrics.KindLogs, n)
	l := &d.logs
	l.mu.Lock()
	if l.stored == nil {
		l.stored = map[logKey]int{}
	}
	l.stored[logKey{id, envoy}]++
	if l.changed != nil {
		close(l.changed)
		l.changed = nil
	}
	l.mu.Unlock()
	d.log.InfoContext(ctx, "training log received", api.LogJob, id, api.LogEnvoy, envoy, api.LogBytes, n)
	return nil
}

// TrainingLog returns envoy's training log of job e for who, who must be
// allowed to manage e (its submitter, or a project_admin). When the envoy
// is online and its site shares logs, the director first asks it for a
// fresh copy in its next heartbeat reply and waits for it up to two
// heartbeat periods (at most maxLogWait); then, or otherwise, it returns
// the latest copy it has.
func (d *Director) TrainingLog(ctx context.Context, who Caller, e store.Experiment, envoy string) (api.TrainingLog, error) {
	if err := canManage(who, e); err != nil {
		return api.TrainingLog{}, err
	}
	if err := api.ValidateName("envoy", envoy); err != nil {
		return api.TrainingLog{}, err
	}
	ok, err := d.participates(ctx, e.ID, envoy)
	if err != nil {
		return api.TrainingLog{}, err
	}
	if !ok {
		return api.TrainingLog{}, fmt.Errorf("%w: %s took no part in job %s", api.ErrNotFound, envoy, e.ID)
	}
	key := logKey{e.ID, envoy}
	l := &d.logs
	l.mu.Lock()
	shares := l.shares[envoy]
	before := l.stored[key]
	if shares && d.isOnline(envoy) && !slices.Contains(l.asked[envoy], e.ID) {
		if l.asked == nil {
			l.asked = map[string][]string{}
		}
		l.asked[envoy] = append(l.asked[envoy], e.ID)
	}
	l.mu.Unlock()
	fresh := false
	if shares && d.isOnline(envoy) {
		fresh = d.waitLog(ctx, key, before, min(2*d.cfg.HealthCheckPeriod, maxLogWait))
	}
	f, err := d.openBlob(ctx, logPath(e.ID, envoy))
	switch {
	case errors.Is(err, fs.ErrNotExist) && !shares:
		return api.TrainingLog{}, fmt.Errorf("%w: %s does not share training logs (its site policy, or envoy start --share-logs)", api.ErrConflict, envoy)
	case errors.Is(err, fs.ErrNotExist):
		return api.TrainingLog{}, fmt.Errorf("%w: no log from %s yet", api.ErrNotFound, envoy)
	case err != nil:
		return api.TrainingLog{}, err
	}
	defer f.Close()
	// The file was checked when it came in; read no more than it may hold.
	b, err := io.ReadAll(io.LimitReader(f, api.MaxSharedLog))
	if err != nil {
		return api.TrainingLog{}, err
	}
	return api.TrainingLog{JobID: e.ID, Envoy: envoy, TakenAt: f.Info().ModTime.UTC(), Fresh: fresh, Size: len(b), Data: b}, nil
}

// waitLog waits until a copy of key's log newer than the count before has
// been stored, ctx ends, or wait passes, and reports whether one was.
func (d *Director) waitLog(ctx context.Context, key logKey, before int, wait time.Duration) bool {
	t := time.NewTimer(wait)
	defer t.Stop()
	l := &d.logs
	for {
		l.mu.Lock()
		if l.stored[key] > before {
			l.mu.Unlock()
			return true
		}
		if l.changed == nil {
			l.changed = make(chan struct{})
		}
		ch := l.changed
		l.mu.Unlock()
		select {
		case <-ch:
		case <-t.C:
			return false
		case <-ctx.Done():
			return false
		case <-d.stopping:
			return false
		}
	}
}

// isOnline reports whether envoy is registered and online now.
func (d *Director) isOnline(envoy string) bool {
	r := d.reg
	r.mu.RLock()
	e := r.envoys[envoy]
	r.mu.RUnlock()
	if e == nil {
		return false
	}
	e.mu.Lock()
	seen := e.lastSeen
	e.mu.Unlock()
	return r.online(seen, r.now())
}

// removeLogs removes the logs kept of job id.
func (d *Director) removeLogs(ctx context.Context, id string) {
	if err := d.blobs.RemovePrefix(context.WithoutCancel(ctx), blob.Key(filepath.Join(logsDir, id))); err != nil {
		d.log.ErrorContext(ctx, "remove job logs", api.LogJob, id, api.LogErr, err)
	}
	d.logs.mu.Lock()
	for k := range d.logs.stored {
		if k.job == id {
			delete(d.logs.stored, k)
		}
	}
	d.logs.mu.Unlock()
}

// removeOrphanLogs removes the logs of jobs that no longer exist: a
// crash between a job's deletion and its logs'.
func (d *Director) removeOrphanLogs(ctx context.Context) error {
	jobs := map[string]bool{}
	err := d.blobs.List(ctx, logsDir, func(b blob.Info) error {
		// logs/<job id>/<envoy>.log
		if id, _, ok := strings.Cut(strings.TrimPrefix(b.Key, logsDir+"/"), "/"); ok {
			jobs[id] = true
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("list logs: %w", err)
	}
	for id := range jobs {
		_, err := d.db.GetExperiment(ctx, id)
		switch {
		case errors.Is(err, api.ErrNotFound):
			d.log.Warn("removing the logs of a job that is gone", api.LogJob, id)
			if err := d.blobs.RemovePrefix(ctx, blob.Key(filepath.Join(logsDir, id))); err != nil {
				return fmt.Errorf("remove orphan logs: %w", err)
			}
		case err != nil:
			return err
		}
	}
	return nil
}
