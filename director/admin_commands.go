package director

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/job"
	"github.com/fedplane/fedplane/store"
)

// minIDPrefix is the shortest job id prefix commands accept.
const minIDPrefix = 8

// adminCommands is the admin command set of admin-wire.md.
func (d *Director) adminCommands() map[string]adminCommand {
	return map[string]adminCommand{
		"submit_job":   {run: d.cmdSubmitJob, binary: true, usage: "submit_job (binary request, body = zip of the job folder)"},
		"list_jobs":    {run: d.cmdListJobs, usage: "list_jobs [-n name_prefix] [-m max] [-r]"},
		"get_job_meta": {run: d.cmdGetJobMeta, usage: "get_job_meta <job_id>"},
		"abort_job":    {run: d.cmdAbortJob, usage: "abort_job <job_id>"},
		"delete_job":   {run: d.cmdDeleteJob, usage: "delete_job <job_id>"},
		"list_envoys":  {run: d.cmdListEnvoys, usage: "list_envoys"},
		"check_status": {run: d.cmdCheckStatus, usage: "check_status"},
	}
}

func (d *Director) adminCommandNames() []string {
	var names []string
	for n := range d.adminCommands() {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// jobJSON is a job as admin replies carry it in meta (stable lowerCamel keys).
type jobJSON struct {
	JobID         string          `json:"jobId"`
	Name          string          `json:"name"`
	Status        string          `json:"status"`
	Reason        string          `json:"reason,omitempty"`
	Submitter     string          `json:"submitter"`
	SubmitterOrg  string          `json:"submitterOrg,omitempty"`
	SubmitterRole string          `json:"submitterRole,omitempty"`
	SubmitTime    time.Time       `json:"submitTime"`
	StartTime     *time.Time      `json:"startTime,omitempty"`
	EndTime       *time.Time      `json:"endTime,omitempty"`
	Duration      string          `json:"duration"`
	ArchiveSize   int64           `json:"archiveSize"`
	ArchiveSHA256 string          `json:"archiveSha256"`
	Manifest      json.RawMessage `json:"manifest,omitempty"`
}

func (d *Director) jobJSON(e store.Experiment, withManifest bool) jobJSON {
	j := jobJSON{
		JobID: e.ID, Name: e.Name, Status: e.Status, Reason: e.Reason,
		Submitter: e.Submitter, SubmitterOrg: e.SubmitterOrg, SubmitterRole: e.SubmitterRole,
		SubmitTime: e.CreatedAt, Duration: d.jobDuration(e),
		ArchiveSize: e.ArchiveSize, ArchiveSHA256: e.ArchiveSHA256,
	}
	if !e.StartedAt.IsZero() {
		j.StartTime = &e.StartedAt
	}
	if !e.FinishedAt.IsZero() {
		j.EndTime = &e.FinishedAt
	}
	if withManifest {
		j.Manifest = json.RawMessage(e.Manifest)
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

// cmdSubmitJob stores an uploaded job archive: stream to a temp file with its
// sha256, inspect it without trusting it, commit the file, then the row.
func (d *Director) cmdSubmitJob(ctx context.Context, req *adminRequest) *adminproto.Message {
	if len(req.args) > 0 {
		return replyError(adminproto.StatusSyntaxError, "submit_job takes no arguments, got %q", req.args)
	}
	tmp, err := d.createTemp("upload-*.zip")
	if err != nil {
		d.log.ErrorContext(ctx, "create upload file", keyErr, err)
		return replyError(adminproto.StatusInternalError, "cannot store the upload: %v", err)
	}
	committed := false
	defer func() {
		if !committed {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	h := sha256.New()
	n, err := req.body.CopyBody(io.MultiWriter(tmp, h))
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			d.log.ErrorContext(ctx, "write upload", keyErr, err)
			return replyError(adminproto.StatusError, "director cannot store the upload: %v", pe.Err)
		}
		return replyError(adminproto.StatusError, "upload refused: %v", err)
	}
	info, err := job.Inspect(tmp, n, job.Limits{MaxUnpacked: d.cfg.MaxUnpackedSize, MaxFiles: job.DefaultLimits().MaxFiles, MaxRatio: job.DefaultLimits().MaxRatio})
	if err != nil {
		if errors.Is(err, job.ErrInvalid) {
			return replyError(adminproto.StatusInvalidJobDef, "%v", err)
		}
		d.log.ErrorContext(ctx, "inspect upload", keyErr, err)
		return replyError(adminproto.StatusInternalError, "cannot read the upload: %v", err)
	}
	manifest, err := json.Marshal(info.Manifest)
	if err != nil {
		return replyError(adminproto.StatusInternalError, "encode job.json: %v", err)
	}
	id := uuid.NewString()
	rel := filepath.Join(experimentsDir, id, archiveFile)
	if err := d.commitFile(tmp, rel); err != nil {
		d.log.ErrorContext(ctx, "commit upload", keyErr, err)
		return replyError(adminproto.StatusError, "director cannot store the upload: %v", err)
	}
	committed = true
	e, err := d.db.CreateExperiment(ctx, store.Experiment{
		ID: id, Name: info.Manifest.Name, Manifest: string(manifest),
		Submitter: req.caller.Name, SubmitterOrg: req.caller.Org, SubmitterRole: req.caller.Role,
		ArchivePath: rel, ArchiveSHA256: hex.EncodeToString(h.Sum(nil)), ArchiveSize: n,
	})
	if err != nil {
		os.RemoveAll(filepath.Join(d.cfg.DataDir, filepath.Dir(rel)))
		d.log.ErrorContext(ctx, "record job", keyErr, err)
		return replyError(adminproto.StatusInternalError, "cannot record the job: %v", err)
	}
	d.log.InfoContext(ctx, "job submitted", "job", id, "name", e.Name, "bytes", n, "submitter", e.Submitter)
	return replyOK(map[string]any{"job_id": id, "job": d.jobJSON(e, false)},
		adminproto.Item{Type: adminproto.TypeString, Data: "Submitted job: " + id})
}

// cmdListJobs lists jobs, newest first unless -r.
func (d *Director) cmdListJobs(ctx context.Context, req *adminRequest) *adminproto.Message {
	fs := flag.NewFlagSet("list_jobs", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	prefix := fs.String("n", "", "name prefix")
	maxJobs := fs.Int("m", 0, "max jobs")
	reverse := fs.Bool("r", false, "oldest first")
	if err := fs.Parse(req.args); err != nil || fs.NArg() > 0 || *maxJobs < 0 {
		why := "unexpected arguments"
		if err != nil {
			why = err.Error()
		} else if *maxJobs < 0 {
			why = "-m must not be negative"
		}
		return replyError(adminproto.StatusSyntaxError, "list_jobs: %s; usage: %s", why, d.adminCommands()["list_jobs"].usage)
	}
	exps, err := d.db.ListExperiments(ctx, store.ExperimentFilter{NamePrefix: *prefix, Max: *maxJobs, NewestLast: *reverse})
	if err != nil {
		return d.internalError(ctx, err)
	}
	rows := [][]string{{"JOB ID", "NAME", "STATUS", "SUBMITTER", "SUBMIT TIME", "DURATION"}}
	jobs := make([]jobJSON, 0, len(exps))
	for _, e := range exps {
		j := d.jobJSON(e, false)
		jobs = append(jobs, j)
		rows = append(rows, []string{e.ID, e.Name, e.Status, e.Submitter, e.CreatedAt.Format(time.RFC3339), j.Duration})
	}
	meta := map[string]any{"jobs": jobs}
	if len(exps) == 0 {
		reply := replyOK(meta, adminproto.Item{Type: adminproto.TypeString, Data: "No jobs."})
		return reply
	}
	return replyOK(meta, adminproto.Item{Type: adminproto.TypeTable, Rows: rows})
}

// findJob resolves a job id or unique prefix argument.
func (d *Director) findJob(ctx context.Context, cmd string, args []string) (store.Experiment, *adminproto.Message) {
	if len(args) != 1 {
		return store.Experiment{}, replyError(adminproto.StatusSyntaxError, "usage: %s", d.adminCommands()[cmd].usage)
	}
	id := args[0]
	if len(id) < minIDPrefix {
		return store.Experiment{}, replyError(adminproto.StatusInvalidJobID, "job id %q is too short: give at least %d characters", id, minIDPrefix)
	}
	e, err := d.db.FindExperiment(ctx, id)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return e, replyError(adminproto.StatusInvalidJobID, "no job with id %q", id)
	case errors.Is(err, store.ErrAmbiguous):
		return e, replyError(adminproto.StatusInvalidJobID, "job id prefix %q matches more than one job; give more characters", id)
	case err != nil:
		return e, d.internalError(ctx, err)
	}
	return e, nil
}

// cmdGetJobMeta shows one job with its manifest.
func (d *Director) cmdGetJobMeta(ctx context.Context, req *adminRequest) *adminproto.Message {
	e, reply := d.findJob(ctx, "get_job_meta", req.args)
	if reply != nil {
		return reply
	}
	j := d.jobJSON(e, true)
	return replyOK(map[string]any{"job": j}, adminproto.Item{Type: adminproto.TypeDict, Data: j})
}

// cmdAbortJob aborts a job that has not ended.
func (d *Director) cmdAbortJob(ctx context.Context, req *adminRequest) *adminproto.Message {
	e, reply := d.findJob(ctx, "abort_job", req.args)
	if reply != nil {
		return reply
	}
	reason := "aborted by " + req.caller.Name
	aborted, err := d.db.SetExperimentStatus(ctx, e.ID, []string{store.StatusPending}, store.StatusAborted, reason)
	if errors.Is(err, store.ErrStatus) {
		cur, err := d.db.GetExperiment(ctx, e.ID)
		if err != nil {
			return d.internalError(ctx, err)
		}
		return replyError(adminproto.StatusJobNotRunning, "job %s is %s: only a pending or running job can be aborted", cur.ID, cur.Status)
	}
	if err != nil {
		return d.internalError(ctx, err)
	}
	d.log.InfoContext(ctx, "job aborted", "job", aborted.ID, keyReason, reason)
	return replyOK(map[string]any{"job": d.jobJSON(aborted, false)},
		adminproto.Item{Type: adminproto.TypeSuccess, Data: "Aborted job " + aborted.ID})
}

// cmdDeleteJob removes a job that is not running: its row, then its files.
func (d *Director) cmdDeleteJob(ctx context.Context, req *adminRequest) *adminproto.Message {
	e, reply := d.findJob(ctx, "delete_job", req.args)
	if reply != nil {
		return reply
	}
	err := d.db.DeleteExperiment(ctx, e.ID, store.StatusInProgress)
	if errors.Is(err, store.ErrStatus) {
		return replyError(adminproto.StatusJobRunning, "job %s is running: abort it before deleting it", e.ID)
	}
	if errors.Is(err, store.ErrNotFound) {
		return replyError(adminproto.StatusInvalidJobID, "no job with id %q", e.ID)
	}
	if err != nil {
		return d.internalError(ctx, err)
	}
	// The row is gone; a crash before this line leaves files that start-up removes.
	if err := os.RemoveAll(filepath.Join(d.cfg.DataDir, experimentsDir, e.ID)); err != nil {
		d.log.ErrorContext(ctx, "remove job files", "job", e.ID, keyErr, err)
	}
	d.log.InfoContext(ctx, "job deleted", "job", e.ID)
	return replyOK(map[string]any{"jobId": e.ID}, adminproto.Item{Type: adminproto.TypeSuccess, Data: "Deleted job " + e.ID})
}

// envoyJSON is an envoy as admin replies carry it in meta.
type envoyJSON struct {
	Name              string    `json:"name"`
	Online            bool      `json:"online"`
	LastSeen          time.Time `json:"lastSeen"`
	Experiment        string    `json:"experiment"`
	ExperimentRunning bool      `json:"experimentRunning"`
	Samples           uint64    `json:"samples"`
	Shard             string    `json:"shard"`
	SampleShape       []string  `json:"sampleShape"`
	TargetShape       []string  `json:"targetShape"`
	RegisteredAt      time.Time `json:"registeredAt"`
}

// cmdListEnvoys lists the federation's envoys.
func (d *Director) cmdListEnvoys(ctx context.Context, req *adminRequest) *adminproto.Message {
	if len(req.args) > 0 {
		return replyError(adminproto.StatusSyntaxError, "list_envoys takes no arguments, got %q", req.args)
	}
	views := d.reg.list()
	rows := make([][]string, 0, len(views)+1)
	rows = append(rows, []string{"NAME", "ONLINE", "LAST SEEN", "EXPERIMENT", "SAMPLES", "SHARD"})
	envoys := make([]envoyJSON, 0, len(views))
	for _, v := range views {
		envoys = append(envoys, envoyJSON{
			Name: v.Name, Online: v.Online, LastSeen: v.LastSeen, ExperimentRunning: v.ExperimentRunning,
			Samples: v.NSamples, Shard: v.Description, SampleShape: v.SampleShape, TargetShape: v.TargetShape,
			RegisteredAt: v.RegisteredAt,
		})
		rows = append(rows, []string{v.Name, strconv.FormatBool(v.Online), v.LastSeen.Format(time.RFC3339), "",
			strconv.FormatUint(v.NSamples, 10), v.Description})
	}
	return replyOK(map[string]any{"envoys": envoys}, adminproto.Item{Type: adminproto.TypeTable, Rows: rows})
}

// cmdCheckStatus reports the director's version, uptime and counts.
func (d *Director) cmdCheckStatus(ctx context.Context, req *adminRequest) *adminproto.Message {
	counts, err := d.db.CountExperiments(ctx)
	if err != nil {
		return d.internalError(ctx, err)
	}
	online := 0
	views := d.reg.list()
	for _, v := range views {
		if v.Online {
			online++
		}
	}
	uptime := d.cfg.Now().Sub(d.started).Round(time.Second)
	meta := map[string]any{
		"version":      d.cfg.Version,
		"uptime":       uptime.String(),
		"startTime":    d.started,
		"envoys":       len(views),
		"envoysOnline": online,
		"jobs":         counts,
	}
	text := fmt.Sprintf("fedplane director %s, up %s; envoys: %d (%d online); jobs: %d pending, %d running",
		d.cfg.Version, uptime, len(views), online, counts[store.StatusPending], counts[store.StatusInProgress])
	return replyOK(meta, adminproto.Item{Type: adminproto.TypeString, Data: text})
}

// internalError logs err and replies without internal detail.
func (d *Director) internalError(ctx context.Context, err error) *adminproto.Message {
	d.log.ErrorContext(ctx, "admin command failed", keyErr, err)
	return replyError(adminproto.StatusInternalError, "internal error; see the director's log")
}
