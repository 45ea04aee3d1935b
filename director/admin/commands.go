package admin

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
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
	"github.com/fedplane/fedplane/director"
	"github.com/fedplane/fedplane/job"
	"github.com/fedplane/fedplane/pki"
	"github.com/fedplane/fedplane/store"
)

// commands is the admin command set of admin-wire.md, with what FLARE
// 2.6's client learns of each from _commands: its scope, description and
// usage, the confirmation its console asks for, the client-side handler
// it maps the command onto, and whether a user sees it.
func (s *Server) commands() map[string]command {
	return map[string]command{
		api.CmdSubmitJob: {run: s.submitJob, binary: true, scope: api.ScopeJobMgmt, desc: "submit a job",
			usage: "submit_job [job_folder] (binary request, body = zip of the job folder)", clientCmd: flarePushFolder},
		api.CmdUploadStatus: {run: s.uploadStatus, scope: api.ScopeFedplane, desc: "say how much of a resumable upload the director holds",
			usage: "upload_status <upload_id>"},
		api.CmdListJobs:   {run: s.listJobs, scope: api.ScopeJobMgmt, desc: "list submitted jobs", usage: "list_jobs [-n name_prefix] [-m max] [-r]"},
		api.CmdGetJobMeta: {run: s.getJobMeta, scope: api.ScopeJobMgmt, desc: "get meta info of specified job", usage: "get_job_meta <job_id>"},
		api.CmdAbortJob: {run: s.abortJob, scope: api.ScopeJobMgmt, desc: "abort a job if it is pending or running",
			usage: "abort_job <job_id>", confirm: confirmYesNo},
		api.CmdDeleteJob: {run: s.deleteJob, scope: api.ScopeJobMgmt, desc: "delete a job that is not running",
			usage: "delete_job <job_id>", confirm: confirmAuth},
		api.CmdDownloadJob: {run: s.downloadJob, scope: api.ScopeJobMgmt, desc: "download a job's results",
			usage: "download_job <job_id>", clientCmd: flarePullFolder},
		api.CmdDownloadJobFile: {run: s.downloadJobFile, scope: api.ScopeJobMgmt, desc: "download one file of a job download",
			usage: "download_job_file <tx_id> <job_id> <file> [end]", clientCmd: flarePullBinary, hidden: true},
		api.CmdCheckStatus: {run: s.checkStatus, scope: api.ScopeTraining, desc: "check status of the director", usage: "check_status [server]"},
		api.CmdListEnvoys: {run: s.listEnvoys, scope: api.ScopeFedplane, desc: "list the federation's envoys",
			usage: "list_envoys [-a after_name] [-m max]"},
		api.CmdRemoveEnvoy: {run: s.removeEnvoy, scope: api.ScopeFedplane, desc: "forget an envoy",
			usage: "remove_envoy <envoy_name>", confirm: confirmAuth},
		api.CmdGetMetrics: {run: s.getMetrics, scope: api.ScopeFedplane, desc: "get a job's metrics",
			usage: "get_metrics <job_id> [after_seq]"},
		api.CmdGetLog: {run: s.getLog, scope: api.ScopeFedplane, desc: "get an envoy's training log of a job, if its site shares logs",
			usage: "get_log <job_id> <envoy_name>"},
		api.CmdDownloadJobZip: {run: s.downloadJobZip, scope: api.ScopeFedplane, desc: "download a job's results as one zip",
			usage: "download_job_zip <job_id> (binary reply, body = zip of the results)"},
		api.CmdGetEvents: {run: s.getEvents, scope: api.ScopeFedplane, desc: "get the federation's events",
			usage: "get_events [-a after_seq] [-j job_id] [-m max] [-w wait_seconds]"},
		api.CmdGetAudit: {run: s.getAudit, scope: api.ScopeFedplane, desc: "get the audit trail (project admins)",
			usage: "get_audit [-a after_seq] [-s since_rfc3339] [-c caller] [-m max]"},
		api.CmdConsoleLogin: {run: s.consoleLogin, scope: api.ScopeFedplane, desc: "get a one-time login link to the web console",
			usage: "console_login"},

		api.CmdCertLogin:    {run: s.certLogin, usage: "_cert_login <user>", session: true},
		api.CmdCommands:     {run: s.listCommands, usage: "_commands", session: true},
		api.CmdCheckSession: {run: s.checkSession, usage: "_check_session", session: true},
		api.CmdLogout:       {run: s.logout, usage: "_logout", session: true},
	}
}

// What FLARE 2.6's console asks before it sends a command (its
// ConfirmMethod), and the client-side handlers of its file transfer module
// that its client maps commands onto (file_transfer_defs.py).
const (
	confirmNone     = "none"
	confirmYesNo    = "yesno"
	confirmAuth     = "auth"
	flarePushFolder = "file_transfer.push_folder"
	flarePullFolder = "file_transfer.pull_folder"
	flarePullBinary = "file_transfer.pull_binary"
)

// resolve finds the command a request names: NAME, or SCOPE.NAME with the
// scope _commands gives NAME (as FLARE's client sends every command). It
// returns the bare name, which the authorization table keys on.
func (s *Server) resolve(word string) (string, command, error) {
	cmds := s.commands()
	name := word
	scope, bare, scoped := strings.Cut(word, ".")
	if scoped {
		name = bare
	}
	cmd, ok := cmds[name]
	switch {
	case !ok:
		return "", command{}, fmt.Errorf("%w: unknown command %q; known: %s", api.ErrInvalid, word, strings.Join(s.CommandNames(), ", "))
	case scoped && scope != cmd.scope:
		want := name
		if cmd.scope != "" {
			want = cmd.scope + "." + name
		}
		return "", command{}, fmt.Errorf("%w: command %q: %s is not in scope %q; send %s", api.ErrInvalid, word, name, scope, want)
	}
	return name, cmd, nil
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
//
// FLARE's client always names the job folder it zipped (`submit_job
// <folder>`); fladmin names none. The name must be a plain name; the reply
// gives it back.
func (s *Server) submitJob(ctx context.Context, req *request) (*adminproto.Message, error) {
	var folder string
	switch len(req.args) {
	case 0:
	case 1:
		folder = req.args[0]
		if err := api.ValidateName("job folder", folder); err != nil {
			return nil, s.usage(req.name, err.Error())
		}
	default:
		return nil, s.usage(req.name, fmt.Sprintf("takes at most one job folder name, got %q", req.args))
	}
	sig, err := s.signature(req)
	if err != nil {
		return nil, err
	}
	var u *director.Upload
	if id, ok := req.msg.Meta[api.MetaUploadID]; ok {
		u, err = s.receiveResumable(ctx, req, id)
		if err != nil {
			return s.uploadRefusal(ctx, req, err), nil
		}
	} else if u, err = s.d.ReceiveArchive(req.body.CopyBody); err != nil {
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
	noWait := false
	if v, ok := req.msg.Meta[api.MetaWaitForEnvoys].(bool); ok {
		noWait = !v
	}
	e, err := s.d.SubmitJob(ctx, req.caller, u, director.Submission{Signature: sig, FolderName: folder, NoWait: noWait})
	if err != nil {
		return nil, err
	}
	meta := map[string]any{api.MetaJobID: e.ID, api.MetaJob: s.d.JobInfo(e, false)}
	if why := s.d.JobCannotStart(e); why != "" {
		meta[api.MetaWarning] = "the job cannot start yet: " + why
	}
	if folder != "" {
		meta[api.MetaJobFolderName] = folder
	}
	return replyOK(meta, adminproto.Item{Type: adminproto.TypeString, Data: "Submitted job: " + e.ID}), nil
}

// receiveResumable receives the part of a resumable upload that req's
// body holds: the archive from meta offset on, of the size and sha256 the
// meta announces. A part cut short is kept for a resume; once the archive
// is whole, its sha256 is checked and it becomes an Upload.
func (s *Server) receiveResumable(ctx context.Context, req *request, rawID any) (*director.Upload, error) {
	id, _ := rawID.(string)
	if err := checkUploadID(id); err != nil {
		return nil, err
	}
	size, err := metaInt(req.msg.Meta, api.MetaSize, s.d.Config().MaxJobSize)
	if err != nil {
		return nil, err
	}
	off, err := metaInt(req.msg.Meta, api.MetaOffset, size)
	if err != nil {
		return nil, err
	}
	sum, _ := req.msg.Meta[api.MetaSHA256].(string)
	if b, err := hex.DecodeString(sum); err != nil || len(b) != sha256.Size || strings.ToLower(sum) != sum {
		return nil, fmt.Errorf("%w: meta %s %q is not a lowercase hex sha256", api.ErrInvalid, api.MetaSHA256, sum)
	}
	if got := req.body.BodySize; got != uint64(size-off) {
		return nil, fmt.Errorf("%w: the body is %d bytes, but the upload's %d from byte %d leave %d", api.ErrInvalid, got, size, off, size-off)
	}
	up, err := s.uploads.take(id, s.sessionKey(req), s.callerKey(req), size, sum, off, s.d.NewPartial)
	if err != nil {
		return nil, err
	}
	if err := s.d.ReceivePart(up.p, size, req.body.CopyBody); err != nil {
		// A connection that broke leaves bytes worth resuming from; a
		// frame that arrived whole but failed its checksum, or a disk
		// that failed, does not.
		var pe *os.PathError
		keep := !errors.As(err, &pe) && !errors.Is(err, adminproto.ErrChecksum) && !errors.Is(err, adminproto.ErrFooter) && !errors.Is(err, api.ErrTooLarge)
		if kerr := s.uploads.put(id, up, keep); kerr != nil {
			s.log.WarnContext(ctx, "partial upload: cannot record it for a restart", api.LogErr, kerr)
		}
		if errors.As(err, &pe) {
			s.log.ErrorContext(ctx, "write upload", api.LogErr, err)
			return nil, fmt.Errorf("%w: director cannot store the upload: %v", api.ErrUnavailable, pe.Err)
		}
		if _, _, internal := api.Codes(err); internal {
			return nil, fmt.Errorf("%w: upload cut off: %w", api.ErrDataLoss, err)
		}
		return nil, err
	}
	s.uploads.finish(id)
	return s.d.FinishPartial(up.p, size, sum)
}

// uploadRefusal is the reply to a resumable upload refused with err; it
// says how many bytes of the upload the director holds (meta offset),
// where the client resumes.
func (s *Server) uploadRefusal(ctx context.Context, req *request, err error) *adminproto.Message {
	reply := s.errorReply(ctx, req.name, err)
	var wrong *errWrongOffset
	if errors.As(err, &wrong) {
		reply.Meta[api.MetaOffset] = wrong.held
	} else if id, ok := req.msg.Meta[api.MetaUploadID].(string); ok && !errors.Is(err, api.ErrBusy) {
		if held, err := s.uploads.held(ctx, id, s.sessionKey(req)); err == nil {
			reply.Meta[api.MetaOffset] = held
		}
	}
	return reply
}

// uploadStatus tells how many bytes of the caller's resumable upload the
// director holds.
func (s *Server) uploadStatus(ctx context.Context, req *request) (*adminproto.Message, error) {
	if len(req.args) != 1 {
		return nil, s.usage(req.name, "give one upload id")
	}
	if err := checkUploadID(req.args[0]); err != nil {
		return nil, err
	}
	held, err := s.uploads.held(ctx, req.args[0], s.sessionKey(req))
	if err != nil {
		return nil, err
	}
	return replyOK(map[string]any{api.MetaUploadID: req.args[0], api.MetaOffset: held}), nil
}

// metaInt reads a whole number from 0 to most from a request's meta.
func metaInt(meta map[string]any, key string, most int64) (int64, error) {
	f, ok := meta[key].(float64)
	if !ok || f < 0 || f != float64(int64(f)) || int64(f) > most {
		return 0, fmt.Errorf("%w: meta %s %v is not a whole number from 0 to %d", api.ErrInvalid, key, meta[key], most)
	}
	return int64(f), nil
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
	rows := make([]api.FlareJob, len(jobs))
	for i, j := range jobs {
		rows[i] = api.FlareJob{Job: j, JobName: j.Name, SubmitTimeISO: j.SubmitTime.Format(time.RFC3339Nano)}
	}
	meta := map[string]any{api.MetaJobs: rows}
	if len(jobs) == 0 {
		return replyOK(meta, adminproto.Item{Type: adminproto.TypeString, Data: "No jobs."}), nil
	}
	table := [][]string{{"JOB ID", "NAME", "STATUS", "SUBMITTER", "SUBMIT TIME", "DURATION"}}
	for _, j := range jobs {
		table = append(table, []string{j.JobID, j.Name, string(j.Status), j.Submitter, j.SubmitTime.Format(time.RFC3339), j.Duration})
	}
	return replyOK(meta, adminproto.Item{Type: adminproto.TypeTable, Rows: table}), nil
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
	return replyOK(map[string]any{api.MetaJob: j, api.MetaJobMeta: flareJobMeta(j)}, adminproto.Item{Type: adminproto.TypeDict, Data: j}), nil
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
	s.downloads.endJob(e.ID)
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
// FLARE's client names the target, "server", which is the director.
func (s *Server) checkStatus(ctx context.Context, req *request) (*adminproto.Message, error) {
	if len(req.args) == 1 && req.args[0] == "server" {
		req.args = nil
	}
	if err := s.noArgs(req); err != nil {
		return nil, err
	}
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

// resultsBundle lays out the results of req's job in a folder of their
// own, within the downloads gate: release leaves the gate, and the caller
// owns dir.
func (s *Server) resultsBundle(ctx context.Context, req *request) (e store.Experiment, dir string, release func(), err error) {
	if e, err = s.job(ctx, req); err != nil {
		return e, "", nil, err
	}
	if release, err = s.d.EnterDownload(s.callerKey(req)); err != nil {
		return e, "", nil, err
	}
	if dir, err = s.d.ResultsBundle(ctx, req.caller, e); err != nil {
		release()
		return e, "", nil, err
	}
	return e, dir, release, nil
}

// downloadJobZip replies with a binary exchange whose body is a zip of the
// job's results (see director.ResultsBundle), streamed: its size is known
// before the first byte is sent and nothing is held in memory.
//
// A cut download resumes: every entry carries the job's submit time, so
// the zip of the same results is the same bytes each time it is made, and
// the reply's meta gives the whole zip's size and sha256 (one more pass
// over the results before the first byte). A request whose meta holds an
// offset and the sha256 it was for gets the zip from that offset if the
// zip is still the same (a finished job's always is), and the whole zip
// otherwise; the reply's offset says which.
func (s *Server) downloadJobZip(ctx context.Context, req *request) (*adminproto.Message, error) {
	e, dir, release, err := s.resultsBundle(ctx, req)
	if err != nil {
		return nil, err
	}
	defer release()
	defer os.RemoveAll(dir)
	a, err := job.NewArchive(dir)
	if err != nil {
		return nil, err
	}
	a.SetTime(e.CreatedAt)
	h := sha256.New()
	if _, err := a.WriteTo(h); err != nil {
		return nil, err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	off, err := resumeAt(req.msg.Meta, sum, a.Size())
	if err != nil {
		return nil, err
	}
	meta, err := adminproto.EncodeMessage(replyOK(map[string]any{api.MetaJobID: e.ID, api.MetaJobStatus: e.Status,
		api.MetaSize: a.Size(), api.MetaSHA256: sum, api.MetaOffset: off}))
	if err != nil {
		return nil, err
	}
	pr, pw := io.Pipe()
	go func() { _, err := a.WriteFrom(pw, off); pw.CloseWithError(err) }()
	defer pr.Close()
	bw := bufio.NewWriterSize(req.w, 256<<10)
	err = adminproto.WriteBinary(bw, meta, uint64(a.Size()-off), pr)
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		s.log.WarnContext(ctx, "download not delivered", api.LogJob, e.ID, api.LogErr, err)
	}
	return nil, nil
}

// resumeAt reads the offset and sha256 of a download request's meta: the
// offset to send the zip of sum and size from, or 0 (the whole zip) when
// the request asks for none or held another zip. A malformed offset is
// refused.
func resumeAt(meta map[string]any, sum string, size int64) (int64, error) {
	v, ok := meta[api.MetaOffset]
	if !ok {
		return 0, nil
	}
	f, ok := v.(float64)
	if !ok || f < 0 || f != float64(int64(f)) || int64(f) > size && meta[api.MetaSHA256] == sum {
		return 0, fmt.Errorf("%w: meta %s %v is not an offset into the %d bytes of the zip", api.ErrInvalid, api.MetaOffset, v, size)
	}
	if held, _ := meta[api.MetaSHA256].(string); held != sum || int64(f) > size {
		return 0, nil // another zip: the results changed
	}
	return int64(f), nil
}
