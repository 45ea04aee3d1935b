package director

import (
	"archive/zip"
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/job"
	"github.com/fedplane/fedplane/store"
	"github.com/fedplane/fedplane/tensor"
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
		"download_job": {run: d.cmdDownloadJob, usage: "download_job <job_id>"},
		"get_metrics":  {run: d.cmdGetMetrics, usage: "get_metrics <job_id> [after_seq]"},
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

func (d *Director) jobJSON(e store.Experiment, withManifest bool) api.Job {
	j := api.Job{
		JobID: e.ID, Name: e.Name, Status: e.Status, Reason: e.Reason,
		Submitter: e.Submitter, SubmitterOrg: e.SubmitterOrg, SubmitterRole: e.SubmitterRole,
		SubmitTime: e.CreatedAt, Duration: d.jobDuration(e),
		ArchiveSize: e.ArchiveSize, ArchiveSHA256: e.ArchiveSHA256,
	}
	j.StartTime, j.EndTime = e.StartedAt, e.FinishedAt
	if withManifest {
		j.Manifest = json.RawMessage(e.Manifest)
	}
	if m, err := manifestOf(e); err == nil {
		j.Rounds = m.Rounds
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
	u, err := d.receiveArchive(req.body.CopyBody)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			d.log.ErrorContext(ctx, "write upload", keyErr, err)
			return replyError(adminproto.StatusError, "director cannot store the upload: %v", pe.Err)
		}
		return replyError(adminproto.StatusError, "upload refused: %v", err)
	}
	defer u.discard()
	info, err := d.inspectUpload(u)
	if err != nil {
		return d.jobError(ctx, "inspect upload", err)
	}
	if why := d.unknownEnvoys(info.Manifest.Envoys); why != "" {
		return replyError(adminproto.StatusInvalidJobDef, "job.json: %s", why)
	}
	model, modelSum, err := d.extractModel(u.f, u.size, info.Root)
	if err != nil {
		return d.jobError(ctx, "extract model", err)
	}
	e, err := d.storeJob(ctx, u, info.Manifest, model, modelSum, req.caller)
	if err != nil {
		return d.jobError(ctx, "store job", err)
	}
	return replyOK(map[string]any{api.MetaJobID: e.ID, api.MetaJob: d.jobJSON(e, false)},
		adminproto.Item{Type: adminproto.TypeString, Data: "Submitted job: " + e.ID})
}

// jobError replies to a refused or failed job submission: invalid_job_def
// naming the problem, or an error (logged) when the director failed.
func (d *Director) jobError(ctx context.Context, what string, err error) *adminproto.Message {
	if errors.Is(err, job.ErrInvalid) {
		return replyError(adminproto.StatusInvalidJobDef, "%v", err)
	}
	d.log.ErrorContext(ctx, what, keyErr, err)
	return replyError(adminproto.StatusError, "director cannot store the job: %v", err)
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
	jobs := make([]api.Job, 0, len(exps))
	for _, e := range exps {
		j := d.jobJSON(e, false)
		jobs = append(jobs, j)
		rows = append(rows, []string{e.ID, e.Name, string(e.Status), e.Submitter, e.CreatedAt.Format(time.RFC3339), j.Duration})
	}
	meta := map[string]any{api.MetaJobs: jobs}
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
	case errors.Is(err, api.ErrNotFound):
		return e, replyError(adminproto.StatusInvalidJobID, "no job with id %q", id)
	case errors.Is(err, api.ErrAmbiguous):
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
	parts, err := d.db.ExperimentEnvoys(ctx, e.ID)
	if err != nil {
		return d.internalError(ctx, err)
	}
	rounds, err := d.db.Rounds(ctx, e.ID)
	if err != nil {
		return d.internalError(ctx, err)
	}
	if len(rounds) > 0 {
		j.RoundsDone = rounds[len(rounds)-1].Round
	}
	for _, p := range parts {
		j.Envoys = append(j.Envoys, api.Participant{Name: p.Envoy, Status: p.Status, Round: p.Round, Reason: p.Reason, Updated: p.UpdatedAt})
	}
	return replyOK(map[string]any{api.MetaJob: j}, adminproto.Item{Type: adminproto.TypeDict, Data: j})
}

// cmdAbortJob aborts a job that has not ended.
func (d *Director) cmdAbortJob(ctx context.Context, req *adminRequest) *adminproto.Message {
	e, reply := d.findJob(ctx, "abort_job", req.args)
	if reply != nil {
		return reply
	}
	if err := mayManage(req.caller, e); err != nil {
		return replyError(adminproto.StatusNotAuthorized, "%v", err)
	}
	reason := "aborted by " + req.caller.Name
	aborted, err := d.endExperiment(ctx, e.ID, api.JobAborted, reason)
	if errors.Is(err, api.ErrConflict) {
		cur, err := d.db.GetExperiment(ctx, e.ID)
		if err != nil {
			return d.internalError(ctx, err)
		}
		return replyError(adminproto.StatusJobNotRunning, "job %s is %s: only a pending or running job can be aborted", cur.ID, cur.Status)
	}
	if err != nil {
		return d.internalError(ctx, err)
	}
	return replyOK(map[string]any{api.MetaJob: d.jobJSON(aborted, false)},
		adminproto.Item{Type: adminproto.TypeSuccess, Data: "Aborted job " + aborted.ID})
}

// cmdDeleteJob removes a job that is not running: its row, then its files.
func (d *Director) cmdDeleteJob(ctx context.Context, req *adminRequest) *adminproto.Message {
	e, reply := d.findJob(ctx, "delete_job", req.args)
	if reply != nil {
		return reply
	}
	if err := mayManage(req.caller, e); err != nil {
		return replyError(adminproto.StatusNotAuthorized, "%v", err)
	}
	err := d.deleteJob(ctx, e.ID)
	if errors.Is(err, api.ErrConflict) {
		return replyError(adminproto.StatusJobRunning, "%v", err)
	}
	if errors.Is(err, api.ErrNotFound) {
		return replyError(adminproto.StatusInvalidJobID, "no job with id %q", e.ID)
	}
	if err != nil {
		return d.internalError(ctx, err)
	}
	return replyOK(map[string]any{api.MetaJobID: e.ID}, adminproto.Item{Type: adminproto.TypeSuccess, Data: "Deleted job " + e.ID})
}

// cmdListEnvoys lists the federation's envoys.
func (d *Director) cmdListEnvoys(ctx context.Context, req *adminRequest) *adminproto.Message {
	if len(req.args) > 0 {
		return replyError(adminproto.StatusSyntaxError, "list_envoys takes no arguments, got %q", req.args)
	}
	views := d.reg.list()
	running := d.runningByEnvoy()
	rows := make([][]string, 0, len(views)+1)
	rows = append(rows, []string{"NAME", "ONLINE", "LAST SEEN", "EXPERIMENT", "SAMPLES", "SHARD"})
	// The list is encoded here, by hand: see jsonenc.go.
	envoys := make([]byte, 0, 256*len(views)+2)
	envoys = append(envoys, '[')
	for i, v := range views {
		exp := running[v.Name]
		if i > 0 {
			envoys = append(envoys, ',')
		}
		envoys = appendEnvoyJSON(envoys, &api.Envoy{
			Name: v.Name, Online: v.Online, LastSeen: v.LastSeen, ExperimentRunning: v.ExperimentRunning, Experiment: exp,
			Samples: v.NSamples, Shard: v.Description, SampleShape: v.SampleShape, TargetShape: v.TargetShape,
			RegisteredAt: v.RegisteredAt,
		})
		rows = append(rows, []string{v.Name, strconv.FormatBool(v.Online), v.LastSeen.Format(time.RFC3339), exp,
			strconv.FormatUint(v.NSamples, 10), v.Description})
	}
	envoys = append(envoys, ']')
	return replyOK(map[string]any{api.MetaEnvoys: adminproto.RawJSON(envoys)}, adminproto.Item{Type: adminproto.TypeTable, Rows: rows})
}

// cmdCheckStatus reports the director's version, uptime and counts.
func (d *Director) cmdCheckStatus(ctx context.Context, req *adminRequest) *adminproto.Message {
	counts, err := d.db.CountExperiments(ctx)
	if err != nil {
		return d.internalError(ctx, err)
	}
	total, online := d.reg.count()
	uptime := d.cfg.Now().Sub(d.started).Round(time.Second)
	meta := map[string]any{
		"version":      d.cfg.Version,
		"uptime":       uptime.String(),
		"startTime":    d.started,
		"envoys":       total,
		"envoysOnline": online,
		"jobs":         counts,
	}
	text := fmt.Sprintf("fedplane director %s, up %s; envoys: %d (%d online); jobs: %d pending, %d running",
		d.cfg.Version, uptime, total, online, counts[api.JobPending], counts[api.JobInProgress])
	return replyOK(meta, adminproto.Item{Type: adminproto.TypeString, Data: text})
}

// internalError logs err and replies without internal detail.
func (d *Director) internalError(ctx context.Context, err error) *adminproto.Message {
	d.log.ErrorContext(ctx, "admin command failed", keyErr, err)
	return replyError(adminproto.StatusInternalError, "internal error; see the director's log")
}

// unknownEnvoys explains why a job naming envoys that never registered is
// refused, or returns "".
func (d *Director) unknownEnvoys(names []string) string {
	if len(names) == 0 {
		return ""
	}
	known := map[string]bool{}
	for _, v := range d.reg.list() {
		known[v.Name] = true
	}
	var missing []string
	for _, name := range names {
		if !known[name] {
			missing = append(missing, strconv.Quote(name))
		}
	}
	if len(missing) == 0 {
		return ""
	}
	return fmt.Sprintf("\"envoys\" names %s, which never registered with this director", strings.Join(missing, ", "))
}

// extractModel copies the job's model.safetensors out of the archive into a
// temp file and checks it: a valid safetensors file of float32 tensors. It
// returns the open temp file and its sha256.
func (d *Director) extractModel(archive *os.File, size int64, root string) (*os.File, string, error) {
	zr, err := zip.NewReader(archive, size)
	if err != nil {
		return nil, "", fmt.Errorf("%w: job archive: %w", job.ErrInvalid, err)
	}
	var entry *zip.File
	for _, f := range zr.File {
		if f.Name == root+job.ModelFile {
			entry = f
		}
	}
	if entry == nil {
		return nil, "", fmt.Errorf("%w: job archive: no %s next to job.json: the job needs its initial model", job.ErrInvalid, job.ModelFile)
	}
	rc, err := entry.Open()
	if err != nil {
		return nil, "", fmt.Errorf("%w: job archive: %s: %w", job.ErrInvalid, job.ModelFile, err)
	}
	defer rc.Close()
	tmp, err := d.createTemp("model-*.safetensors")
	if err != nil {
		return nil, "", err
	}
	fail := func(err error) (*os.File, string, error) {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, "", err
	}
	hw := job.NewHashWriter(tmp)
	n, err := io.Copy(hw, io.LimitReader(rc, int64(entry.UncompressedSize64)+1))
	hw.Close()
	sum := hw.Sum()
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return fail(err)
		}
		return fail(fmt.Errorf("%w: job archive: %s: %w", job.ErrInvalid, job.ModelFile, err))
	}
	x, _, err := tensor.ReadSafetensors(tmp, n)
	if err != nil {
		return fail(fmt.Errorf("%w: %s: %w", job.ErrInvalid, job.ModelFile, err))
	}
	if len(x.Tensors) == 0 {
		return fail(fmt.Errorf("%w: %s holds no tensors", job.ErrInvalid, job.ModelFile))
	}
	for _, t := range x.Tensors {
		if t.DType != "F32" {
			return fail(fmt.Errorf("%w: %s: tensor %q is %s; fedplane averages float32 (F32) tensors", job.ErrInvalid, job.ModelFile, t.Name, t.DType))
		}
	}
	return tmp, sum, nil
}

// cmdGetMetrics returns a job's metrics (those after a sequence number, for
// a client that follows them) and its status.
func (d *Director) cmdGetMetrics(ctx context.Context, req *adminRequest) *adminproto.Message {
	var after int64
	args := req.args
	if len(args) == 2 {
		n, err := strconv.ParseInt(args[1], 10, 64)
		if err != nil || n < 0 {
			return replyError(adminproto.StatusSyntaxError, "get_metrics: after_seq %q is not a non-negative number", args[1])
		}
		after, args = n, args[:1]
	}
	e, reply := d.findJob(ctx, "get_metrics", args)
	if reply != nil {
		return reply
	}
	ms, err := d.db.MetricsAfter(ctx, e.ID, after)
	if err != nil {
		return d.internalError(ctx, err)
	}
	out := make([]api.Metric, 0, len(ms))
	for _, m := range ms {
		out = append(out, api.Metric{Seq: m.Seq, Round: m.Round, Origin: m.Origin, Task: m.Task, Name: m.Name, Value: m.Value, Time: m.Time})
	}
	return replyOK(map[string]any{api.MetaJobID: e.ID, api.MetaJobStatus: e.Status, api.MetaMetrics: out})
}

// cmdDownloadJob replies with a binary exchange whose body is a zip of the
// job's results (see writeBundle), streamed: its size is known before the
// first byte is sent and nothing is held in memory.
func (d *Director) cmdDownloadJob(ctx context.Context, req *adminRequest) *adminproto.Message {
	e, reply := d.findJob(ctx, "download_job", req.args)
	if reply != nil {
		return reply
	}
	if err := mayManage(req.caller, e); err != nil {
		return replyError(adminproto.StatusNotAuthorized, "%v", err)
	}
	dir, err := d.writeBundle(ctx, e)
	if err != nil {
		return d.internalError(ctx, err)
	}
	defer os.RemoveAll(dir)
	a, err := job.NewArchive(dir)
	if err != nil {
		return d.internalError(ctx, err)
	}
	meta, err := adminproto.EncodeMessage(replyOK(map[string]any{api.MetaJobID: e.ID, api.MetaJobStatus: e.Status, api.MetaSize: a.Size()}))
	if err != nil {
		return d.internalError(ctx, err)
	}
	pr, pw := io.Pipe()
	go func() { _, err := a.WriteTo(pw); pw.CloseWithError(err) }()
	defer pr.Close()
	bw := bufio.NewWriterSize(req.w, 256<<10)
	err = adminproto.WriteBinary(bw, meta, uint64(a.Size()), pr)
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		d.log.WarnContext(ctx, "download not delivered", keyJob, e.ID, keyErr, err)
	}
	return nil
}
