package admin

import (
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
	"time"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/director"
	"github.com/fedplane/fedplane/job"
	"github.com/fedplane/fedplane/pki"
	"github.com/fedplane/fedplane/store"
)

// commands is the admin command set of admin-wire.md.
func (s *Server) commands() map[string]command {
	return map[string]command{
		api.CmdSubmitJob:   {run: s.submitJob, binary: true, usage: "submit_job (binary request, body = zip of the job folder)"},
		api.CmdListJobs:    {run: s.listJobs, usage: "list_jobs [-n name_prefix] [-m max] [-r]"},
		api.CmdGetJobMeta:  {run: s.getJobMeta, usage: "get_job_meta <job_id>"},
		api.CmdAbortJob:    {run: s.abortJob, usage: "abort_job <job_id>"},
		api.CmdDeleteJob:   {run: s.deleteJob, usage: "delete_job <job_id>"},
		api.CmdListEnvoys:  {run: s.listEnvoys, usage: "list_envoys [-a after_name] [-m max]"},
		api.CmdRemoveEnvoy: {run: s.removeEnvoy, usage: "remove_envoy <envoy_name>"},
		api.CmdDownloadJob: {run: s.downloadJob, usage: "download_job <job_id>"},
		api.CmdGetMetrics:  {run: s.getMetrics, usage: "get_metrics <job_id> [after_seq]"},
		api.CmdCheckStatus: {run: s.checkStatus, usage: "check_status"},
	}
}

// CommandNames lists the admin commands the server answers, sorted.
func (s *Server) CommandNames() []string {
	var names []string
	for n := range s.commands() {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// usage is a syntax error naming command's usage.
func (s *Server) usage(command, why string) error {
	return fmt.Errorf("%w: %s: %s; usage: %s", api.ErrInvalid, command, why, s.commands()[command].usage)
}

// noArgs refuses arguments to a command that takes none.
func (s *Server) noArgs(req *request) error {
	if len(req.args) > 0 {
		return s.usage(req.name, fmt.Sprintf("takes no arguments, got %q", req.args))
	}
	return nil
}

// job resolves the one job id (or unique prefix) argument of req.
func (s *Server) job(ctx context.Context, req *request) (store.Experiment, error) {
	if len(req.args) != 1 {
		return store.Experiment{}, s.usage(req.name, "give one job id")
	}
	return s.d.FindJob(ctx, req.args[0])
}

// submitJob stores an uploaded job archive: stream to a temp file with its
// sha256, inspect it without trusting it, commit the file, then the row.
func (s *Server) submitJob(ctx context.Context, req *request) (*adminproto.Message, error) {
	if err := s.noArgs(req); err != nil {
		return nil, err
	}
	sig, err := s.signature(req)
	if err != nil {
		return nil, err
	}
	u, err := s.d.ReceiveArchive(req.body.CopyBody)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			s.log.ErrorContext(ctx, "write upload", api.LogErr, err)
			return nil, fmt.Errorf("%w: director cannot store the upload: %v", api.ErrUnavailable, pe.Err)
		}
		if _, _, internal := api.Codes(err); internal {
			// The upload itself broke off or failed its checksum.
			return nil, fmt.Errorf("%w: upload refused: %w", api.ErrDataLoss, err)
		}
		return nil, err
	}
	e, err := s.d.SubmitJob(ctx, req.caller, u, director.Submission{Signature: sig})
	if err != nil {
		return nil, err
	}
	return replyOK(map[string]any{api.MetaJobID: e.ID, api.MetaJob: s.d.JobInfo(e, false)},
		adminproto.Item{Type: adminproto.TypeString, Data: "Submitted job: " + e.ID}), nil
}

// callerKey names req's caller for the per-caller bounds, as the gRPC
// services do: its certificate with TLS, its host without (where callers
// name themselves).
func (s *Server) callerKey(req *request) string {
	if s.cfg.TLS != nil {
		return req.caller.Kind + ":" + req.caller.Name
	}
	return req.remote
}

// signature reads submit_job's job signature, if any, before the body: its
// certificate must be the caller's own, from the federation's CA, so that
// nobody stores a job under another submitter's signature. That it signs
// the archive is checked once the archive is in (SubmitJob); envoys check
// it all again against their own CA.
func (s *Server) signature(req *request) (*pki.JobSignature, error) {
	v, ok := req.msg.Meta[api.MetaSignature]
	if !ok {
		return nil, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("%w: meta %q: %v", api.ErrInvalidJob, api.MetaSignature, err)
	}
	sig, err := pki.ParseJobSignature(b)
	if err != nil {
		return nil, fmt.Errorf("%w: meta %q: %v", api.ErrInvalidJob, api.MetaSignature, err)
	}
	if s.cfg.TLS == nil {
		return sig, nil // a local caller: nothing to check it against
	}
	id, err := sig.Verify(s.cfg.TLS.ClientCAs, sig.SHA256, time.Now())
	if err != nil {
		return nil, fmt.Errorf("%w: %v", api.ErrInvalidJob, err)
	}
	if id.Name != req.caller.Name || id.Org != req.caller.Org {
		return nil, fmt.Errorf("%w: the job is signed by %s, not by the caller %s: submit your own jobs with your own key", api.ErrNotAllowed, id.Name, req.caller.Name)
	}
	return sig, nil
}

// listJobs lists jobs, newest first unless -r.
func (s *Server) listJobs(ctx context.Context, req *request) (*adminproto.Message, error) {
	fs := flag.NewFlagSet(api.CmdListJobs, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	prefix := fs.String("n", "", "name prefix")
	maxJobs := fs.Int("m", 0, "max jobs")
	reverse := fs.Bool("r", false, "oldest first")
	if err := fs.Parse(req.args); err != nil {
		return nil, s.usage(req.name, err.Error())
	}
	if fs.NArg() > 0 {
		return nil, s.usage(req.name, "unexpected arguments")
	}
	if *maxJobs < 0 {
		return nil, s.usage(req.name, "-m must not be negative")
	}
	jobs, err := s.d.ListJobs(ctx, store.ExperimentFilter{NamePrefix: *prefix, Max: *maxJobs, NewestLast: *reverse})
	if err != nil {
		return nil, err
	}
	meta := map[string]any{api.MetaJobs: jobs}
	if len(jobs) == 0 {
		return replyOK(meta, adminproto.Item{Type: adminproto.TypeString, Data: "No jobs."}), nil
	}
	rows := [][]string{{"JOB ID", "NAME", "STATUS", "SUBMITTER", "SUBMIT TIME", "DURATION"}}
	for _, j := range jobs {
		rows = append(rows, []string{j.JobID, j.Name, string(j.Status), j.Submitter, j.SubmitTime.Format(time.RFC3339), j.Duration})
	}
	return replyOK(meta, adminproto.Item{Type: adminproto.TypeTable, Rows: rows}), nil
}

// getJobMeta shows one job with its manifest and each envoy's state.
func (s *Server) getJobMeta(ctx context.Context, req *request) (*adminproto.Message, error) {
	e, err := s.job(ctx, req)
	if err != nil {
		return nil, err
	}
	j, err := s.d.JobDetail(ctx, e)
	if err != nil {
		return nil, err
	}
	return replyOK(map[string]any{api.MetaJob: j}, adminproto.Item{Type: adminproto.TypeDict, Data: j}), nil
}

// abortJob aborts a job that has not ended.
func (s *Server) abortJob(ctx context.Context, req *request) (*adminproto.Message, error) {
	e, err := s.job(ctx, req)
	if err != nil {
		return nil, err
	}
	aborted, err := s.d.AbortJob(ctx, req.caller, e)
	if err != nil {
		return nil, err
	}
	return replyOK(map[string]any{api.MetaJob: s.d.JobInfo(aborted, false)},
		adminproto.Item{Type: adminproto.TypeSuccess, Data: "Aborted job " + aborted.ID}), nil
}

// deleteJob removes a job that is not running: its row, then its files.
func (s *Server) deleteJob(ctx context.Context, req *request) (*adminproto.Message, error) {
	e, err := s.job(ctx, req)
	if err != nil {
		return nil, err
	}
	if err := s.d.DeleteJob(ctx, req.caller, e); err != nil {
		return nil, err
	}
	return replyOK(map[string]any{api.MetaJobID: e.ID}, adminproto.Item{Type: adminproto.TypeSuccess, Data: "Deleted job " + e.ID}), nil
}

// listEnvoys lists the federation's envoys a page at a time, by name:
// those after -a, at most -m of them (api.DefaultEnvoyPage, at most
// api.MaxEnvoyPage), fewer when they reach api.EnvoyPageBytes. The reply's
// meta says how many envoys there are in all and, unless this is the last
// page, the name to ask after for the next.
func (s *Server) listEnvoys(ctx context.Context, req *request) (*adminproto.Message, error) {
	fs := flag.NewFlagSet(api.CmdListEnvoys, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	after := fs.String("a", "", "list the envoys whose names sort after this one")
	maxEnvoys := fs.Int("m", api.DefaultEnvoyPage, "max envoys")
	if err := fs.Parse(req.args); err != nil {
		return nil, s.usage(req.name, err.Error())
	}
	if fs.NArg() > 0 {
		return nil, s.usage(req.name, "unexpected arguments")
	}
	if *maxEnvoys < 1 || *maxEnvoys > api.MaxEnvoyPage {
		return nil, s.usage(req.name, fmt.Sprintf("-m %d: want 1 to %d", *maxEnvoys, api.MaxEnvoyPage))
	}
	views, total, more := s.d.EnvoysPage(*after, *maxEnvoys)
	rows := make([][]string, 0, len(views)+1)
	rows = append(rows, []string{"NAME", "ONLINE", "LAST SEEN", "EXPERIMENT", "SAMPLES", "GPU", "SHARD"})
	// The list is encoded here, by hand: see jsonenc.go.
	envoys := make([]byte, 0, 256*len(views)+2)
	envoys = append(envoys, '[')
	size, next := 0, ""
	for i, v := range views {
		if size >= api.EnvoyPageBytes {
			next = views[i-1].Name
			break
		}
		start := len(envoys)
		if i > 0 {
			envoys = append(envoys, ',')
		}
		envoys = appendEnvoyJSON(envoys, &api.Envoy{
			Name: v.Name, Online: v.Online, LastSeen: v.LastSeen, ExperimentRunning: v.ExperimentRunning, Experiment: v.Experiment,
			Samples: v.NSamples, Shard: v.Description, SampleShape: v.SampleShape, TargetShape: v.TargetShape,
			RegisteredAt: v.RegisteredAt,
		}, v.Devices)
		row := []string{v.Name, strconv.FormatBool(v.Online), v.LastSeen.Format(time.RFC3339), v.Experiment,
			strconv.FormatUint(v.NSamples, 10), gpuColumn(v.Devices), v.Description}
		rows = append(rows, row)
		size += len(envoys) - start
		for _, c := range row {
			size += len(c)
		}
	}
	envoys = append(envoys, ']')
	if next == "" && more {
		next = views[len(views)-1].Name
	}
	meta := map[string]any{api.MetaEnvoys: adminproto.RawJSON(envoys), api.MetaTotal: total, api.MetaNextAfter: next}
	return replyOK(meta, adminproto.Item{Type: adminproto.TypeTable, Rows: rows}), nil
}

// removeEnvoy forgets an envoy (see director.RemoveEnvoy).
func (s *Server) removeEnvoy(ctx context.Context, req *request) (*adminproto.Message, error) {
	if len(req.args) != 1 {
		return nil, s.usage(req.name, "give one envoy name")
	}
	name := req.args[0]
	if err := s.d.RemoveEnvoy(ctx, req.caller, name); err != nil {
		return nil, err
	}
	return replyOK(map[string]any{api.MetaEnvoy: name}, adminproto.Item{Type: adminproto.TypeSuccess, Data: "Removed envoy " + name}), nil
}

// checkStatus reports the director's version, uptime and counts: meta is
// an api.DirectorStatus.
func (s *Server) checkStatus(ctx context.Context, req *request) (*adminproto.Message, error) {
	st, err := s.d.Status(ctx)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	var meta map[string]any
	if err := json.Unmarshal(b, &meta); err != nil {
		return nil, err
	}
	text := fmt.Sprintf("fedplane director %s, up %s; envoys: %d (%d online); jobs: %d pending, %d running",
		st.Version, st.Uptime, st.Envoys, st.EnvoysOnline, st.Jobs[api.JobPending], st.Jobs[api.JobInProgress])
	return replyOK(meta, adminproto.Item{Type: adminproto.TypeString, Data: text}), nil
}

// getMetrics returns a job's metrics (those after a sequence number, for a
// client that follows them) and its status.
func (s *Server) getMetrics(ctx context.Context, req *request) (*adminproto.Message, error) {
	var after int64
	if len(req.args) == 2 {
		n, err := strconv.ParseInt(req.args[1], 10, 64)
		if err != nil || n < 0 {
			return nil, s.usage(req.name, fmt.Sprintf("after_seq %q is not a non-negative number", req.args[1]))
		}
		after = n
		req.args = req.args[:1]
	}
	e, err := s.job(ctx, req)
	if err != nil {
		return nil, err
	}
	ms, err := s.d.Metrics(ctx, e, after)
	if err != nil {
		return nil, err
	}
	return replyOK(map[string]any{api.MetaJobID: e.ID, api.MetaJobStatus: e.Status, api.MetaMetrics: ms}), nil
}

// downloadJob replies with a binary exchange whose body is a zip of the
// job's results (see director.ResultsBundle), streamed: its size is known
// before the first byte is sent and nothing is held in memory.
func (s *Server) downloadJob(ctx context.Context, req *request) (*adminproto.Message, error) {
	e, err := s.job(ctx, req)
	if err != nil {
		return nil, err
	}
	release, err := s.d.EnterDownload(s.callerKey(req))
	if err != nil {
		return nil, err
	}
	defer release()
	dir, err := s.d.ResultsBundle(ctx, req.caller, e)
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	a, err := job.NewArchive(dir)
	if err != nil {
		return nil, err
	}
	meta, err := adminproto.EncodeMessage(replyOK(map[string]any{api.MetaJobID: e.ID, api.MetaJobStatus: e.Status, api.MetaSize: a.Size()}))
	if err != nil {
		return nil, err
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
		s.log.WarnContext(ctx, "download not delivered", api.LogJob, e.ID, api.LogErr, err)
	}
	return nil, nil
}
