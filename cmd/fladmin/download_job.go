package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

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
DIR/<job id>/ is never overwritten.`,
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
	tmp, err := os.CreateTemp(o.dir, ".fladmin-download-*.zip")
	if err != nil {
		return "", "", fmt.Errorf("download folder: %w", err)
	}
	defer func() {
		tmp.Close()
		os.Remove(tmp.Name())
	}()
	c, err := f.client()
	if err != nil {
		return "", "", err
	}
	msg, err := c.Download(cmd.Context(), f.request(api.CmdDownloadJob+" "+id), maxDownload, tmp)
	if err != nil {
		return "", "", fmt.Errorf("download %s: %w", id, f.explain(err))
	}
	reply, err := replyMeta(msg)
	if err != nil {
		return "", "", err
	}
	if err := reply.Into(api.MetaJobID, &jobID); err != nil {
		return "", "", err
	}
	size, err := tmp.Seek(0, 2)
	if err != nil {
		return "", "", err
	}
	dst = filepath.Join(o.dir, jobID)
	if _, err := os.Stat(dst); err == nil {
		return "", "", fmt.Errorf("%s already exists: remove it or pass another -d", dst)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return "", "", err
	}
	// Unpack next to dst, then rename: dst never holds half a download.
	staging := filepath.Join(o.dir, ".fladmin-"+jobID)
	os.RemoveAll(staging)
	if _, err := job.Unpack(tmp, size, staging, job.DefaultLimits()); err != nil {
		os.RemoveAll(staging)
		return "", "", fmt.Errorf("unpack results of %s: %w", jobID, err)
	}
	if err := os.Rename(staging, dst); err != nil {
		os.RemoveAll(staging)
		return "", "", err
	}
	return jobID, dst, nil
}
