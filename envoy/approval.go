package envoy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/fedplane/fedplane/api"
)

// Under "approval: manual" an offered job waits in the envoy until the site
// operator decides. The envoy writes what waits into its work dir, and
// "envoy approve", "envoy reject" and "envoy pending" (run by the operator,
// as the envoy's user) read it and write the decision there: the work dir
// is the envoy's own (0700), so nobody else can approve, and a decision
// survives an envoy restart. A decision holds the archive's digest: it
// approves those exact bytes, never a different archive offered under the
// same job id.

const (
	// approvalsDirName is the folder of the work dir holding what waits
	// and what was decided.
	approvalsDirName = "approvals"
	pendingSuffix    = ".pending.json"
	decisionSuffix   = ".decision.json"
	// decisionPoll is how often a waiting job looks for its decision.
	decisionPoll = 500 * time.Millisecond
	// maxRecord bounds a record file read back.
	maxRecord = 1 << 20
	// maxRejectReason bounds the reason of a rejection.
	maxRejectReason = 4 << 10
)

// PendingJob is a job that waits for the site operator's decision.
type PendingJob struct {
	JobID string `json:"job_id"`
	Name  string `json:"name"`
	// Submitter, SubmitterOrg and SubmitterRole come from the verified
	// signature's certificate.
	Submitter     string    `json:"submitter"`
	SubmitterOrg  string    `json:"submitterOrg,omitempty"`
	SubmitterRole string    `json:"submitterRole,omitempty"`
	Command       []string  `json:"command"`
	SHA256        string    `json:"archiveSha256"`
	Size          int64     `json:"archiveSize"`
	Since         time.Time `json:"since"`
}

// Decision is the site operator's answer to a PendingJob.
type Decision struct {
	JobID    string    `json:"job_id"`
	SHA256   string    `json:"archiveSha256"`
	Approved bool      `json:"approved"`
	Reason   string    `json:"reason,omitempty"`
	By       string    `json:"by,omitempty"`
	At       time.Time `json:"at"`
}

func approvalsDir(workDir string) string { return filepath.Join(workDir, approvalsDirName) }

// ListPending lists the jobs waiting in workDir for a decision, oldest
// first.
func ListPending(workDir string) ([]PendingJob, error) {
	names, err := filepath.Glob(filepath.Join(approvalsDir(workDir), "*"+pendingSuffix))
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(workDir); err != nil {
		return nil, fmt.Errorf("work dir: %w", err)
	}
	out := make([]PendingJob, 0, len(names))
	for _, n := range names {
		var p PendingJob
		if err := readRecord(n, &p); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				continue // decided meanwhile
			}
			return nil, err
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b PendingJob) int { return a.Since.Compare(b.Since) })
	return out, nil
}

// Decide records the operator's decision on the pending job named by ref
// (its id, or a prefix of at least api.MinIDPrefix characters that names one
// pending job) and returns that job. A rejection needs a reason: the
// director and the submitter are told it.
func Decide(workDir, ref string, approve bool, reason, by string) (PendingJob, error) {
	reason = strings.TrimSpace(reason)
	if !approve && reason == "" {
		return PendingJob{}, errors.New("a rejection needs a reason (--reason): the submitter is told it")
	}
	if len(reason) > maxRejectReason {
		return PendingJob{}, fmt.Errorf("reason is %d bytes long, at most %d allowed", len(reason), maxRejectReason)
	}
	if len(ref) < api.MinIDPrefix {
		return PendingJob{}, fmt.Errorf("job %q: give the id or at least its first %d characters", ref, api.MinIDPrefix)
	}
	pending, err := ListPending(workDir)
	if err != nil {
		return PendingJob{}, err
	}
	var match []PendingJob
	for _, p := range pending {
		if strings.HasPrefix(p.JobID, ref) {
			match = append(match, p)
		}
	}
	switch len(match) {
	case 0:
		return PendingJob{}, fmt.Errorf("no job %q waits for approval in %s (envoy pending lists them)", ref, workDir)
	case 1:
	default:
		return PendingJob{}, fmt.Errorf("%q names %d waiting jobs: give more of the id", ref, len(match))
	}
	p := match[0]
	d := Decision{JobID: p.JobID, SHA256: p.SHA256, Approved: approve, Reason: reason, By: by, At: time.Now().UTC()}
	if err := writeRecord(filepath.Join(approvalsDir(workDir), p.JobID+decisionSuffix), d); err != nil {
		return PendingJob{}, err
	}
	return p, nil
}

// awaitDecision holds job p until the site operator decides, and returns
// the decision. A decision recorded earlier for the same archive (before an
// envoy restart, say) is taken at once. While it waits, the heartbeat tells
// the director so.
func (e *Envoy) awaitDecision(ctx context.Context, x *experiment, p PendingJob) (Decision, error) {
	dir := approvalsDir(e.cfg.WorkDir)
	decisionPath := filepath.Join(dir, p.JobID+decisionSuffix)
	if d, ok := e.decision(x, decisionPath, p.SHA256); ok {
		return d, nil
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Decision{}, fmt.Errorf("approvals folder: %w", err)
	}
	pendingPath := filepath.Join(dir, p.JobID+pendingSuffix)
	if err := writeRecord(pendingPath, p); err != nil {
		return Decision{}, err
	}
	defer os.Remove(pendingPath)
	x.log.Warn("job waits for the site operator's approval: run \"envoy approve "+p.JobID+"\" or \"envoy reject "+p.JobID+" --reason ...\"",
		api.LogJobName, p.Name, api.LogSubmitter, p.Submitter, api.LogCommand, p.Command, api.LogSHA256, p.SHA256)
	e.setAwaiting(x.id)
	defer e.setAwaiting("")
	t := time.NewTicker(decisionPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return Decision{}, context.Cause(ctx)
		case <-t.C:
		}
		if d, ok := e.decision(x, decisionPath, p.SHA256); ok {
			return d, nil
		}
	}
}

// decision reads the decision at path, if there is one for the archive
// with digest sum.
func (e *Envoy) decision(x *experiment, path, sum string) (Decision, bool) {
	var d Decision
	if err := readRecord(path, &d); err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			x.log.Warn("unreadable decision; still waiting", api.LogPath, path, api.LogErr, err)
		}
		return Decision{}, false
	}
	if d.SHA256 != sum || d.JobID != x.id {
		x.log.Warn("the decision on record is for another archive of this job; waiting for a new one", api.LogSHA256, d.SHA256)
		return Decision{}, false
	}
	return d, true
}

// setAwaiting names the experiment waiting for approval ("" for none) and
// has the heartbeat tell the director at once.
func (e *Envoy) setAwaiting(id string) {
	e.mu.Lock()
	e.awaiting = id
	e.mu.Unlock()
	e.prom.setAwaiting(id != "")
	select {
	case e.poke <- struct{}{}:
	default:
	}
}

func (e *Envoy) awaitingApproval() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.awaiting
}

// writeRecord writes v as JSON to path: a temp file, synced and renamed.
func writeRecord(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + tmpSuffix
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(append(b, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// readRecord reads the JSON record at path into v.
func readRecord(path string, v any) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	dec := json.NewDecoder(&limitedReader{f, maxRecord})
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

type limitedReader struct {
	f *os.File
	n int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errors.New("record too large")
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.f.Read(p)
	l.n -= int64(n)
	return n, err
}
