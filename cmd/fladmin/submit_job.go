package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

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

With TLS (--tls-cert and --tls-key), fladmin first reads the folder once to
compute the archive's SHA-256 and signs it with your key; envoys check that
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
	sig, err := o.sign(f, a)
	if err != nil {
		return err
	}
	pr, pw := io.Pipe()
	go func() { _, err := a.WriteTo(pw); pw.CloseWithError(err) }()
	defer pr.Close()

	var body io.Reader = pr
	if !o.noProgress && f.output == "table" && f.stderrIsTerminal() {
		p := newProgress(f.stderr, "Uploading", a.Size())
		defer p.done()
		body = io.TeeReader(pr, p)
	}
	c, err := f.client()
	if err != nil {
		return err
	}
	req := f.request(api.CmdSubmitJob)
	if sig != nil {
		req.Meta[api.MetaSignature] = json.RawMessage(sig.Marshal())
	}
	if !o.waitEnvoys {
		req.Meta[api.MetaWaitForEnvoys] = false
	}
	msg, err := c.Upload(ctx, req, uint64(a.Size()), body)
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

// sign signs the archive's SHA-256 with the admin key of the --tls-* flags,
// or returns nil without TLS. Zipping is deterministic, so the bytes sent
// next hash the same; if a file changes in between, the director finds the
// signature does not match and refuses the job.
func (o *submitJobOptions) sign(f *factory, a *job.Archive) (*pki.JobSignature, error) {
	cfg, err := f.tls.Client()
	if err != nil || cfg == nil {
		return nil, err
	}
	h := sha256.New()
	if _, err := a.WriteTo(h); err != nil {
		return nil, err
	}
	sig, err := pki.SignJob(cfg.Certificates[0], hex.EncodeToString(h.Sum(nil)))
	if err != nil {
		return nil, fmt.Errorf("sign the job with %s: %w", f.tls.Key, err)
	}
	return sig, nil
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
