package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/cmd/internal/cli"
)

type waitJobOptions struct {
	timeout  time.Duration
	interval time.Duration
}

// errJobNotFinished makes wait-job exit 1 after printing the job's end.
var errJobNotFinished = errors.New("job did not finish")

func newWaitJobCmd(f *factory) *cobra.Command {
	o := &waitJobOptions{}
	cmd := &cobra.Command{
		Use:   "wait-job JOB_ID",
		Short: "Wait until a job ends; print its final status and reason",
		Long: `Wait until the job ends, then print its final status and, for a job that
failed or was aborted, the reason. Exit status 0 only when the job finished;
1 when it failed, was aborted or rejected, or --timeout passed first.`,
		Example: `  fladmin wait-job 3f2a9c1e
  fladmin wait-job 3f2a9c1e --timeout 2h -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.timeout < 0 || o.interval <= 0 {
				return cli.Usagef("--timeout must not be negative and --interval must be positive")
			}
			return o.run(cmd.Context(), f, args[0])
		},
	}
	cmd.Flags().DurationVar(&o.timeout, "timeout", 0, "give up after this long (0: wait as long as it takes)")
	cmd.Flags().DurationVar(&o.interval, "interval", time.Second, "how often to ask the director")
	return cmd
}

func (o *waitJobOptions) run(ctx context.Context, f *factory, id string) error {
	if o.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.timeout)
		defer cancel()
	}
	t := time.NewTicker(o.interval)
	defer t.Stop()
	for {
		reply, err := f.do(ctx, api.CmdGetJobMeta+" "+id)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("job %s has not ended after %v", id, o.timeout)
			}
			return err
		}
		var j api.Job
		if err := reply.Into(api.MetaJob, &j); err != nil {
			return err
		}
		if j.Status.Terminal() {
			if f.structured() {
				if err := f.print(map[string]string{api.MetaJobID: j.JobID, "status": string(j.Status), "reason": j.Reason}); err != nil {
					return err
				}
			} else if j.Reason != "" {
				fmt.Fprintf(f.stdout, "Job %s %s: %s\n", j.JobID, j.Status, j.Reason)
			} else {
				fmt.Fprintf(f.stdout, "Job %s %s\n", j.JobID, j.Status)
			}
			if j.Status != api.JobFinished {
				return fmt.Errorf("%w: %s", errJobNotFinished, j.Status)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("job %s is still %s after %v", id, j.Status, o.timeout)
		case <-t.C:
		}
	}
}
