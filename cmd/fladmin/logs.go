package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/cmd/internal/cli"
)

// logsOptions are the flags of fladmin logs.
type logsOptions struct {
	envoy string
}

func newLogsCmd(f *factory) *cobra.Command {
	o := &logsOptions{}
	cmd := &cobra.Command{
		Use:   "logs JOB_ID --envoy NAME",
		Short: "Print an envoy's training log of a job, if its site shares logs",
		Long: fmt.Sprintf(`Print what the job's training command wrote (stdout and stderr) at one
envoy, round after round, as that envoy last sent it to the director.

Sites keep their logs unless they choose to share them: the site policy's
share_logs: true, or envoy start --share-logs for an envoy without a
policy. A sharing envoy sends its log after every training run and at the
job's end; logs asks it for a fresh copy first and waits up to two
heartbeat periods (20 s at most) for it, then prints the latest copy the
director has. What is shared is the log's last %d MiB (from the first
whole line), the site's paths replaced by <shard>, <workspace> and the
like, as in failure reports.

The log goes to stdout as it is; a line on stderr says which envoy, when
the director received it and how many bytes. Only the job's submitter (a
lead) or a project_admin may read it.`, api.MaxSharedLog>>20),
		Example: `  fladmin logs 3f2a9c1e --envoy site-b
  fladmin logs 3f2a9c1e --envoy site-b | grep -i loss`,
		Args: jobIDArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.envoy == "" {
				return cli.Usagef("--envoy is required: name the envoy whose log to print")
			}
			if err := api.ValidateName("--envoy", o.envoy); err != nil {
				return &cli.UsageError{Err: err}
			}
			reply, err := f.do(cmd.Context(), api.CmdGetLog+" "+args[0]+" "+o.envoy)
			if err != nil {
				return err
			}
			var l api.TrainingLog
			if err := reply.Into(api.MetaLog, &l); err != nil {
				return err
			}
			if f.structured() {
				return f.print(l)
			}
			note := ""
			if !l.Fresh {
				note = " (the latest copy the director has; no newer one came when asked, or the envoy is offline)"
			}
			if l.Truncated {
				note += fmt.Sprintf("; only its last %d MiB", api.MaxSharedLog>>20)
			}
			fmt.Fprintf(f.stderr, "Training log of %s for job %s, received %s, %d bytes%s\n",
				l.Envoy, l.JobID, fmtTime(l.TakenAt), l.Size, note)
			_, err = f.stdout.Write(l.Data)
			return err
		},
	}
	cmd.Flags().StringVar(&o.envoy, "envoy", "", "the envoy whose log to print (required)")
	return cmd
}
