package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/job"
	"github.com/fedplane/fedplane/pki"
)

type submitJobOptions struct {
	noProgress bool
	waitEnvoys bool
}

func newSubmitJobCmd(f *factory) *cobra.Command {
	o := &submitJobOptions{}
	cmd := &cobra.Command{
		Use:   "submit-job DIR",
		Short: "Submit a job folder (job.json, model.safetensors, code) and print its id",
		Long: `Submit the job folder DIR. fladmin checks DIR's job.json first, then streams
the folder as a zip straight to the director (no temporary copy): files that
compress are deflated, the rest stored. A progress bar is drawn on stderr when
stderr is a terminal (and -o is table). On success the job's id is printed.

fladmin first reads the folder once to compute the archive's SHA-256. If the
network cuts the upload, fladmin asks the director how much it holds and
sends the rest (up to 6 attempts); the director checks the whole archive's
SHA-256 before it stores the job.

With TLS (--tls-cert and --tls-key), fladmin signs that SHA-256 with your
key; envoys check that
signature against the federation's CA before they unpack the job, and apply
their site policy to the identity in your certificate. A site with a policy
refuses unsigned jobs.`,
		Example: `  fladmin submit-job ./examples/logreg/job
  fladmin submit-job ./my-job -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.run(cmd.Context(), f, args[0])
		},
	}
	cmd.Flags().BoolVar(&o.noProgress, "no-progress", false, "never draw the progress bar")
	cmd.Flags().BoolVar(&o.waitEnvoys, "wait-for-envoys", true, "keep a job that cannot start yet (more min_envoys than have registered) waiting for envoys; false has the director refuse it")
	return cmd
}

func (o *submitJobOptions) run(ctx context.Context, f *factory, dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("job folder: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("job folder %s: not a directory", dir)
	}
	a, err := job.NewArchive(dir)
	if err != nil {
		return err
	}
	sum, sig, err := o.digest(f, a)
	if err != nil {
		return err
	}
	c, err := f.client()
	if err != nil {
		return err
	}
	var p *progress
	if !o.noProgress && f.output == "table" && f.stderrIsTerminal() {
		p = newProgress(f.stderr, "Uploading", a.Size())
		defer p.done()
	}
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	up := &resumableUpload{c: c, f: f, a: a, id: hex.EncodeToString(b[:]), sum: sum, sig: sig, waitEnvoys: o.waitEnvoys, progress: p}
	msg, err := up.run(ctx)
	if err != nil {
		return fmt.Errorf("submit %s: %w", dir, f.explain(err))
	}
	reply, err := replyMeta(msg)
	if err != nil {
		return err
	}
	var id string
	if err := reply.Into(api.MetaJobID, &id); err != nil {
		return err
	}
	var warning string
	if reply.Into(api.MetaWarning, &warning) == nil && warning != "" {
		fmt.Fprintf(f.stderr, "warning: %s\n", warning)
	}
	if f.structured() {
		return f.print(map[string]any{api.MetaJobID: id, "bytes": a.Size(), "files": a.Files()})
	}
	_, err = fmt.Fprintf(f.stdout, "Submitted job %s\n", id)
	return err
}

// digest returns the archive's SHA-256, which a resumable upload announces
// before its first byte (one read of the folder before the upload), and
// with TLS its signature by the admin key of the --tls-* flags. Zipping is
// deterministic, so the bytes sent next, and those sent again on a resume,
// hash the same; if a file changes in between, the director finds that
// the digest does not match and refuses the job.
func (o *submitJobOptions) digest(f *factory, a *job.Archive) (string, *pki.JobSignature, error) {
	h := sha256.New()
	if _, err := a.WriteTo(h); err != nil {
		return "", nil, err
	}
	sum := hex.EncodeToString(h.Sum(nil))
	cfg, err := f.tls.Client()
	if err != nil || cfg == nil {
		return sum, nil, err
	}
	sig, err := pki.SignJob(cfg.Certificates[0], sum)
	if err != nil {
		return "", nil, fmt.Errorf("sign the job with %s: %w", f.tls.Key, err)
	}
	return sum, sig, nil
}

// resumableUpload is one submit-job's upload: sent from the byte the
// director holds each time the network cuts it (README "Transfers that
// resume"). The director keeps what arrived under the upload's random id,
// for this caller only, and says how much with upload_status; it checks
// the whole archive's size and sha256 before it looks at the job.
type resumableUpload struct {
	c          *adminproto.Client
	f          *factory
	a          *job.Archive
	id, sum    string
	sig        *pki.JobSignature
	waitEnvoys bool
	progress   *progress
}

func (u *resumableUpload) run(ctx context.Context) (*adminproto.Message, error) {
	var off int64
	for attempt := 1; ; attempt++ {
		msg, err := u.send(ctx, off)
		if err == nil {
			h, ok := msg.Meta[api.MetaOffset].(float64)
			if msg.Status() != adminproto.StatusOK && ok && attempt < transferAttempts && int64(h) != off && h >= 0 && int64(h) <= u.a.Size() {
				off = int64(h) // the director holds another amount: send from there
				continue
			}
			return msg, nil
		}
		if !u.f.retryTransfer(ctx, "upload", attempt, off, err) {
			return nil, err
		}
		off = u.held(ctx)
	}
}

// held asks the director how many bytes of the upload it holds; 0 (send
// it all) when it holds none, or does not resume uploads.
func (u *resumableUpload) held(ctx context.Context) int64 {
	reply, err := u.c.Do(ctx, u.f.request(api.CmdUploadStatus+" "+u.id))
	if err != nil || reply.Status() != adminproto.StatusOK {
		return 0
	}
	h, ok := reply.Meta[api.MetaOffset].(float64)
	if !ok || h < 0 || int64(h) > u.a.Size() {
		return 0
	}
	return int64(h)
}

// send sends the archive from byte off on.
func (u *resumableUpload) send(ctx context.Context, off int64) (*adminproto.Message, error) {
	pr, pw := io.Pipe()
	go func() { _, err := u.a.WriteFrom(pw, off); pw.CloseWithError(err) }()
	defer pr.Close()
	var body io.Reader = pr
	if u.progress != nil {
		u.progress.n = off
		body = io.TeeReader(pr, u.progress)
	}
	req := u.f.request(api.CmdSubmitJob)
	if u.sig != nil {
		req.Meta[api.MetaSignature] = json.RawMessage(u.sig.Marshal())
	}
	if !u.waitEnvoys {
		req.Meta[api.MetaWaitForEnvoys] = false
	}
	req.Meta[api.MetaUploadID] = u.id
	req.Meta[api.MetaOffset] = off
	req.Meta[api.MetaSize] = u.a.Size()
	req.Meta[api.MetaSHA256] = u.sum
	return u.c.Upload(ctx, req, uint64(u.a.Size()-off), body)
}

// progress draws a one-line progress bar, at most ten times a second.
type progress struct {
	w      io.Writer
	label  string
	total  int64
	n      int64
	start  time.Time
	last   time.Time
	closed bool
}

func newProgress(w io.Writer, label string, total int64) *progress {
	now := time.Now()
	return &progress{w: w, label: label, total: total, start: now}
}

// Write counts bytes as they pass (io.TeeReader's side).
func (p *progress) Write(b []byte) (int, error) {
	p.n += int64(len(b))
	if now := time.Now(); now.Sub(p.last) >= 100*time.Millisecond || p.n == p.total {
		p.last = now
		p.draw(now)
	}
	return len(b), nil
}

func (p *progress) draw(now time.Time) {
	const width = 30
	frac := 1.0
	if p.total > 0 {
		frac = float64(p.n) / float64(p.total)
	}
	filled := int(frac * width)
	bar := make([]byte, width)
	for i := range bar {
		switch {
		case i < filled:
			bar[i] = '='
		case i == filled:
			bar[i] = '>'
		default:
			bar[i] = ' '
		}
	}
	rate := float64(p.n) / max(now.Sub(p.start).Seconds(), 1e-3)
	fmt.Fprintf(p.w, "\r%s [%s] %3.0f%%  %s / %s  %s/s ", p.label, bar, frac*100, humanBytes(p.n), humanBytes(p.total), humanBytes(int64(rate)))
}

// done ends the bar's line.
func (p *progress) done() {
	if !p.closed {
		p.closed = true
		p.draw(time.Now())
		fmt.Fprintln(p.w)
	}
}

// humanBytes formats n with a binary unit.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
