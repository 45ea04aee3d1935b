package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/job"
)

type downloadJobOptions struct {
	dir string
}

// maxDownload bounds a results download; the director's own caps are far
// below it.
const maxDownload = 1 << 40

func newDownloadJobCmd(f *factory) *cobra.Command {
	o := &downloadJobOptions{}
	cmd := &cobra.Command{
		Use:   "download-job JOB_ID",
		Short: "Download a job's results into <job id>/ under --dir",
		Long: `Download a job's results and unpack them into DIR/<job id>/, where DIR is
--dir (default: the current folder):
  job.json                  the job's definition
  status.json               status, reason, times, rounds and each envoy's state
  metrics.csv               round,origin,task,name,value,time
  models/last.safetensors   the newest global model (the final one when finished)
  models/best.safetensors   the best round's model (when job.json sets best_metric)
The download streams into a temp file in DIR, is checked, and is unpacked
with the same rules the director applies to uploads. An existing
DIR/<job id>/ is never overwritten. Nothing the director sends is trusted
as a path: the job id must be a plain name and the job asked for, and
every file is created through DIR itself, so no name and no symlink in DIR
makes fladmin write or remove anything outside it.`,
		Example: `  fladmin download-job 3f2a9c1e
  fladmin download-job 3f2a9c1e -d ./results`,
		Args: jobIDArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			reply, dst, err := o.run(cmd, f, args[0])
			if err != nil {
				return err
			}
			if f.structured() {
				return f.print(map[string]any{api.MetaJobID: reply, "path": dst})
			}
			_, err = fmt.Fprintf(f.stdout, "Downloaded job %s to %s\n", reply, dst)
			return err
		},
	}
	cmd.Flags().StringVarP(&o.dir, "dir", "d", ".", "folder to write <job id>/ into")
	return cmd
}

func (o *downloadJobOptions) run(cmd *cobra.Command, f *factory, id string) (jobID, dst string, err error) {
	if err := os.MkdirAll(o.dir, 0o755); err != nil {
		return "", "", fmt.Errorf("download folder: %w", err)
	}
	// Every file is made through root: nothing a reply names, nor a
	// symlink planted in the folder, reaches outside --dir.
	root, err := os.OpenRoot(o.dir)
	if err != nil {
		return "", "", fmt.Errorf("download folder: %w", err)
	}
	defer root.Close()
	tmpName := ".fladmin-download-" + rand.Text() + ".zip"
	tmp, err := root.OpenFile(tmpName, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", "", fmt.Errorf("download folder: %w", err)
	}
	defer func() {
		tmp.Close()
		root.Remove(tmpName)
	}()
	c, err := f.client()
	if err != nil {
		return "", "", err
	}
	msg, err := download(cmd.Context(), f, c, id, tmp)
	if err != nil {
		return "", "", err
	}
	reply, err := replyMeta(msg)
	if err != nil {
		return "", "", err
	}
	if err := reply.Into(api.MetaJobID, &jobID); err != nil {
		return "", "", err
	}
	// The id becomes a folder name: it must be a name, and the job asked
	// for (the id or a prefix of it was given).
	if err := api.ValidateName("director's "+api.MetaJobID, jobID); err != nil {
		return "", "", fmt.Errorf("download %s: %w", id, err)
	}
	if !strings.HasPrefix(jobID, id) {
		return "", "", fmt.Errorf("download %s: the director sent job %s, not the one asked for", id, jobID)
	}
	size, err := tmp.Seek(0, io.SeekEnd)
	if err != nil {
		return "", "", err
	}
	if err := checkDownload(tmp, size, msg.Meta); err != nil {
		return "", "", fmt.Errorf("download %s: %w", id, err)
	}
	dst = filepath.Join(o.dir, jobID)
	if _, err := root.Lstat(jobID); err == nil {
		return "", "", fmt.Errorf("%s already exists: remove it or pass another -d", dst)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", "", err
	}
	// Unpack next to dst, then rename: dst never holds half a download.
	// The staging folder is new (UnpackIn refuses one that exists), so
	// what is removed on failure is only what this run made.
	staging := ".fladmin-" + jobID + "-" + rand.Text()
	if _, err := job.UnpackIn(tmp, size, root, staging, job.DefaultLimits()); err != nil {
		return "", "", fmt.Errorf("unpack results of %s: %w", jobID, err)
	}
	if err := root.Rename(staging, jobID); err != nil {
		root.RemoveAll(staging)
		return "", "", err
	}
	return jobID, dst, nil
}

// download fetches job id's results zip into tmp. A download cut by the
// network is asked for again from the bytes tmp holds, with the sha256
// the director announced for the zip; the director sends the rest, or the
// whole zip if the results changed meanwhile, and its reply says which.
func download(ctx context.Context, f *factory, c *adminproto.Client, id string, tmp *os.File) (*adminproto.Message, error) {
	var sum string // the zip tmp holds a part of, once a reply said
	for attempt := 1; ; attempt++ {
		held, err := tmp.Seek(0, io.SeekEnd)
		if err != nil {
			return nil, err
		}
		req := f.request(api.CmdDownloadJobZip + " " + id)
		if sum != "" && held > 0 {
			req.Meta[api.MetaOffset] = held
			req.Meta[api.MetaSHA256] = sum
		}
		msg, err := c.DownloadTo(ctx, req, maxDownload, func(m *adminproto.Message) (io.Writer, error) {
			off, _ := m.Meta[api.MetaOffset].(float64)
			if int64(off) != held || held > 0 && m.Meta[api.MetaSHA256] != sum {
				// The whole zip, or another one: start over.
				if err := tmp.Truncate(0); err != nil {
					return nil, err
				}
				if _, err := tmp.Seek(0, io.SeekStart); err != nil {
					return nil, err
				}
				if off != 0 {
					return nil, fmt.Errorf("the director sent the zip from byte %v, not %d", off, held)
				}
			}
			sum, _ = m.Meta[api.MetaSHA256].(string)
			return tmp, nil
		})
		if err == nil {
			return msg, nil
		}
		now, _ := tmp.Seek(0, io.SeekEnd)
		if !f.retryTransfer(ctx, "download of "+id, attempt, now, err) {
			return nil, fmt.Errorf("download %s: %w", id, f.explain(err))
		}
	}
}

// checkDownload checks the zip in tmp, of size bytes, against the size and
// sha256 the director's reply announced, which cover the whole zip however
// many attempts brought it. A director that announces no sha256 (before
// resumable downloads) is checked by the frame's CRC alone.
func checkDownload(tmp *os.File, size int64, meta map[string]any) error {
	if want, ok := meta[api.MetaSize].(float64); ok && int64(want) != size {
		return fmt.Errorf("received %d bytes, the director announced %v", size, int64(want))
	}
	want, ok := meta[api.MetaSHA256].(string)
	if !ok {
		return nil
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(tmp, 0, size)); err != nil {
		return err
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != want {
		return fmt.Errorf("the zip received has sha256 %s, the director announced %s", got, want)
	}
	return nil
}
