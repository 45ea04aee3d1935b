package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/cmd/internal/cli"
)

type listJobsOptions struct {
	namePrefix string
	max        int
	reverse    bool
}

func newListJobsCmd(f *factory) *cobra.Command {
	o := &listJobsOptions{}
	cmd := &cobra.Command{
		Use:     "list-jobs",
		Aliases: []string{"ls"},
		Short:   "List jobs, newest first",
		Example: `  fladmin list-jobs
  fladmin list-jobs -n mnist -m 10
  fladmin list-jobs -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.max < 0 {
				return cli.Usagef("--max %d: must not be negative", o.max)
			}
			if strings.ContainsAny(o.namePrefix, " \t") {
				return cli.Usagef("--name %q: must not contain spaces", o.namePrefix)
			}
			return o.run(cmd, f)
		},
	}
	cmd.Flags().StringVarP(&o.namePrefix, "name", "n", "", "only jobs whose name starts with this")
	cmd.Flags().IntVarP(&o.max, "max", "m", 0, "at most this many jobs (0: all)")
	cmd.Flags().BoolVarP(&o.reverse, "reverse", "r", false, "oldest first")
	return cmd
}

func (o *listJobsOptions) run(cmd *cobra.Command, f *factory) error {
	command := api.CmdListJobs
	if o.namePrefix != "" {
		command += " -n " + o.namePrefix
	}
	if o.max > 0 {
		command += fmt.Sprintf(" -m %d", o.max)
	}
	if o.reverse {
		command += " -r"
	}
	if f.structured() {
		return f.printList(cmd.Context(), command, api.MetaJobs)
	}
	reply, err := f.do(cmd.Context(), command)
	if err != nil {
		return err
	}
	var jobs []api.Job
	if err := reply.Into(api.MetaJobs, &jobs); err != nil {
		return err
	}
	header := []string{"JOB ID", "NAME", "STATUS", "SUBMITTER", "SUBMIT TIME", "DURATION", "NOTE"}
	if len(jobs) == 0 {
		_, err := fmt.Fprintln(f.stdout, "No jobs.")
		return err
	}
	rows := make([][]string, 0, len(jobs))
	for _, j := range jobs {
		rows = append(rows, []string{j.JobID, j.Name, string(j.Status), j.Submitter, fmtTime(j.SubmitTime), j.Duration, o.note(f, j.Reason)})
	}
	return f.printTable(header, rows)
}

// maxNote is how much of a job's reason a table on a terminal shows;
// show-job and -o json have all of it.
const maxNote = 60

// note is a job's reason (what a running job waits for, why an ended one
// ended), cut to maxNote characters on a terminal.
func (o *listJobsOptions) note(f *factory, reason string) string {
	if r := []rune(reason); len(r) > maxNote && f.stdoutIsTerminal() {
		return string(r[:maxNote-1]) + "…"
	}
	return reason
}
