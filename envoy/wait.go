package envoy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/directorpb"
)

// Names inside an experiment's folder, <work-dir>/<id>.
const (
	jobDirName  = "job"
	archiveName = "archive.zip"
	logsDirName = "logs"
	roundPrefix = "round-"
)

const (
	// failTimeout bounds one SetExperimentFailed call.
	failTimeout = 30 * time.Second
	// maxDescription bounds the error description sent to the director.
	maxDescription = 16 << 10
	// codeFailed is SetExperimentFailed's error_code for failures other than
	// a training command's exit status, as OpenFL's envoy sends.
	codeFailed = 1
)

// experiment is the one the envoy has taken.
type experiment struct {
	id     string
	dir    string // <work-dir>/<id>
	log    *slog.Logger
	cancel context.CancelCauseFunc
}

// failure is an error that fails the experiment with a given error code: the
// envoy reports it to the director with SetExperimentFailed. So it does any
// other error of its own (code 1), and any error status from the director
// except those that say the director has ended or never had the experiment
// (see directorKnows).
type failure struct {
	code uint32
	err  error
	// said is what the training command wrote that explains the failure
	// (its stderr tail, a bad metrics line), appended to err's text. The
	// site's log always has it; the director only unless the site
	// withholds it (Config.WithholdStderr).
	said string
	// kind is what failed, for Prometheus (FailureTraining, ...);
	// empty is FailureEnvoy.
	kind string
}

func (f *failure) Error() string { return f.err.Error() + f.said }
func (f *failure) Unwrap() error { return f.err }

// withheld ends a failure description whose details the site keeps.
const withheld = " (details withheld by the site)"

// work waits for experiments and runs them, one at a time, until ctx ends.
func (e *Envoy) work(ctx context.Context) {
	b := newBackoff(minBackoff, maxBackoff)
	var last string // the experiment run last, to back off if it comes again
	for ctx.Err() == nil {
		resp, err := e.dirc.WaitExperiment(ctx, &directorpb.WaitExperimentRequest{CollaboratorName: e.cfg.Name})
		if ctx.Err() != nil {
			return
		}
		if err != nil || resp.GetExperimentName() == "" {
			d := b.delay()
			if err == nil {
				err = errors.New("the director named no experiment")
			}
			logRetry(e.log, "waiting for an experiment failed", "WaitExperiment", err, d)
			sleep(ctx, d)
			continue
		}
		id := resp.GetExperimentName()
		if id == last {
			// The director hands out an experiment this envoy already ran
			// and gave up on: it has not noticed yet. Do not spin.
			if !sleep(ctx, b.delay()) {
				return
			}
		} else {
			b.reset()
		}
		last = id
		e.runExperiment(ctx, id)
	}
}

// runExperiment takes experiment id, runs it to its end, reports a failure,
// and cleans up. The envoy counts as running the experiment from the moment
// it is taken until its training command is gone and its workspace cleaned.
func (e *Envoy) runExperiment(ctx context.Context, id string) {
	log := e.log.With(api.LogJob, id)
	xctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	x := &experiment{id: id, dir: filepath.Join(e.cfg.WorkDir, id), log: log, cancel: cancel}
	e.setCurrent(x)
	defer e.setCurrent(nil)

	log.Info("experiment taken")
	start := time.Now()
	err := checkID(id)
	if err == nil {
		err = e.participate(xctx, x)
		if cerr := cleanWorkspace(x.dir); cerr != nil {
			log.Error("cleaning up the experiment's workspace failed", api.LogErr, cerr)
		}
		e.queueLog(id)
	}
	var f *failure
	switch {
	case ctx.Err() != nil:
		log.Info("experiment interrupted: the envoy is stopping")
	case errors.Is(context.Cause(xctx), errStopped):
		log.Info("experiment stopped by the director")
	case err == nil:
		log.Info("experiment over", api.LogTook, time.Since(start).Round(time.Millisecond))
	case errors.As(err, &f):
		log.Error("experiment failed", api.LogErr, err)
		e.reportFailure(xctx, x, f)
	case !directorKnows(err):
		// Something of the envoy's own (a full disk, say), or a director
		// that refused a request of a running experiment: the experiment
		// cannot go on here, and the director must hear why.
		log.Error("experiment failed", api.LogErr, err)
		e.reportFailure(xctx, x, &failure{code: codeFailed, err: err})
	default:
		log.Warn("giving up on the experiment: the director has ended it or does not know it", api.LogErr, err, api.LogCode, status.Code(err).String())
	}
}

// directorKnows reports whether a director's error status says that the
// experiment is over or unknown there (NotFound, FailedPrecondition), so
// that a failure report would tell it nothing. Any other status (a result
// refused as invalid or too large, a permission denied, an internal error)
// leaves the director waiting for this envoy unless it is told.
func directorKnows(err error) bool {
	switch status.Code(err) {
	case codes.NotFound, codes.FailedPrecondition:
		return true
	}
	return false
}

func (e *Envoy) setCurrent(x *experiment) {
	e.mu.Lock()
	e.cur = x
	e.mu.Unlock()
	e.prom.setRunning(x != nil)
}

// checkID refuses experiment ids that cannot safely name a folder.
func checkID(id string) error {
	if err := checkName(id); err != nil {
		return &failure{code: codeFailed, err: fmt.Errorf("experiment id: %w", err)}
	}
	return nil
}

// reportFailure tells the director that the experiment failed here, retrying
// while the director is unreachable. The description has the site's paths
// replaced by placeholders, and none of what the training command said when
// the site withholds it.
func (e *Envoy) reportFailure(ctx context.Context, x *experiment, f *failure) {
	desc := f.Error()
	if e.cfg.WithholdStderr && f.said != "" {
		desc = f.err.Error() + withheld
	}
	req := &directorpb.SetExperimentFailedRequest{
		ExperimentName:   x.id,
		CollaboratorName: e.cfg.Name,
		ErrorCode:        f.code,
		ErrorDescription: description(newRedactor(&e.cfg, x.dir).redact(desc)),
	}
	err := retry(ctx, x.log, "SetExperimentFailed", func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, failTimeout)
		defer cancel()
		_, err := e.dirc.SetExperimentFailed(ctx, req)
		return err
	})
	switch {
	case ctx.Err() != nil:
	case err != nil:
		x.log.Warn("reporting the failure to the director failed", api.LogErr, err)
	default:
		x.log.Info("failure reported to the director", api.LogCode, f.code)
		kind := f.kind
		if kind == "" {
			kind = FailureEnvoy
		}
		e.prom.failureReported(kind)
	}
}

// description makes s fit a protobuf string of bounded size: valid UTF-8,
// at most maxDescription bytes, keeping the end, where the stderr tail is.
func description(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= maxDescription {
		return s
	}
	head := s[:maxDescription/4]
	tail := s[len(s)-(maxDescription-len(head)-5):]
	return strings.ToValidUTF8(head+" ... "+tail, "\uFFFD")
}

// isStatus reports whether err came from the director as a gRPC status.
func isStatus(err error) bool {
	_, ok := status.FromError(err)
	return ok
}

// cleanWorkspace removes what an experiment left in dir except its logs,
// and closes dir to everyone but the envoy again.
func cleanWorkspace(dir string) error {
	var errs []error
	for _, name := range []string{jobDirName, archiveName, archiveName + tmpSuffix, homeDirName, tmpDirName} {
		if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
			errs = append(errs, err)
		}
	}
	rounds, err := filepath.Glob(filepath.Join(dir, roundPrefix+"*"))
	errs = append(errs, err)
	for _, r := range rounds {
		if err := os.RemoveAll(r); err != nil {
			errs = append(errs, err)
		}
	}
	if err := os.Chmod(dir, 0o700); err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// cleanStale cleans the workspaces a previous run of the envoy may have left
// behind when it was killed.
func (e *Envoy) cleanStale() {
	entries, err := os.ReadDir(e.cfg.WorkDir)
	if err != nil {
		e.log.Warn("listing the work dir failed", api.LogErr, err)
		return
	}
	// Nothing waits for approval before the director offers it again.
	stale, _ := filepath.Glob(filepath.Join(approvalsDir(e.cfg.WorkDir), "*"+pendingSuffix))
	for _, p := range stale {
		os.Remove(p)
	}
	for _, d := range entries {
		if !d.IsDir() || d.Name() == approvalsDirName || checkName(d.Name()) != nil {
			continue
		}
		if pgid, killed := killOrphans(filepath.Join(e.cfg.WorkDir, d.Name(), pgidFile)); killed {
			e.log.Warn("killed a training process left by a killed envoy", api.LogPath, d.Name(), api.LogPGID, pgid)
		}
		if err := cleanWorkspace(filepath.Join(e.cfg.WorkDir, d.Name())); err != nil {
			e.log.Warn("cleaning a stale workspace failed", api.LogPath, filepath.Join(e.cfg.WorkDir, d.Name()), api.LogErr, err)
		}
	}
}
