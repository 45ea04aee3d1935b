package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/spf13/cobra"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/cmd/internal/cli"
)

type waitJobOptions struct {
	waitTimeout time.Duration
	interval    time.Duration
}

var (
	// errJobNotFinished makes wait-job exit 1 after printing the job's end.
	errJobNotFinished = errors.New("job did not finish")
	// errWaitTimeout ends the wait when --wait-timeout has passed.
	errWaitTimeout = errors.New("--wait-timeout passed")
)

func newWaitJobCmd(f *factory) *cobra.Command {
	o := &waitJobOptions{}
	cmd := &cobra.Command{
		Use:   "wait-job JOB_ID",
		Short: "Wait until a job ends, printing each change on the way; then its final status",
		Long: `Wait until the job ends, then print its final status and, for a job that
failed or was aborted, the reason. fladmin follows the director's event
stream (as fladmin events --follow does) and looks at the job again on
every event (an envoy online or offline, a round done, the job's end) and
at least every --interval (a site's approval is not an event). Each change
of the job's state, round or reason (what a pending job waits for, which
site's approval a running one waits for) is printed as a line with the time
it was seen; -o json and -o yaml print only the end.
--wait-timeout bounds the whole wait; the global --timeout still bounds each
question to the director.

Exit status: 0 only when the job finished; 1 when it failed, was aborted or
rejected, or --wait-timeout passed first; 130 on ^C.`,
		Example: `  fladmin wait-job 3f2a9c1e
  fladmin wait-job 3f2a9c1e --wait-timeout 2h -o json`,
		Args: jobIDArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.waitTimeout < 0 {
				return cli.Usagef("--wait-timeout %v: must not be negative", o.waitTimeout)
			}
			if o.interval <= 0 {
				return cli.Usagef("--interval %v: must be positive", o.interval)
			}
			return o.run(cmd.Context(), f, args[0])
		},
	}
	cmd.Flags().DurationVar(&o.waitTimeout, "wait-timeout", 0, "give up when the job has not ended after this long (0: wait as long as it takes)")
	cmd.Flags().DurationVar(&o.interval, "interval", 5*time.Second, "look at the job at least this often when no event comes")
	return cmd
}

func (o *waitJobOptions) run(ctx context.Context, f *factory, id string) error {
	if o.waitTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, o.waitTimeout, errWaitTimeout)
		defer cancel()
	}
	wait := min(o.interval, f.pollWait())
	var last string // the job's state, round and reason as last printed
	// Only what happens from now on matters: the job's state is read
	// before each wait.
	_, seq, err := fetchEvents(ctx, f, math.MaxInt64, "", 0)
	if err != nil {
		if waitExpired(ctx) {
			return fmt.Errorf("job %s has not ended after %v (--wait-timeout)", id, o.waitTimeout)
		}
		return err
	}
	// Once the job has been seen, a director that cannot be reached (a
	// restart, or replicas failing over) is waited for like the job:
	// every call here only reads.
	seen := false
	lost := func(err error) bool {
		var refused *refusedError
		if !seen || errors.As(err, &refused) || ctx.Err() != nil {
			return false
		}
		fmt.Fprintf(f.stderr, "%s  director unreachable, retrying in %v: %v\n", time.Now().Format(time.TimeOnly), wait, err)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		return true
	}
	for {
		reply, err := f.do(ctx, api.CmdGetJobMeta+" "+id)
		if err != nil && lost(err) {
			continue
		}
		if err != nil {
			if waitExpired(ctx) {
				return fmt.Errorf("job %s has not ended after %v (--wait-timeout)", id, o.waitTimeout)
			}
			return err
		}
		seen = true
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
		if !f.structured() {
			if now := progressLine(j); now != last {
				fmt.Fprintf(f.stdout, "%s  %s\n", time.Now().Format(time.TimeOnly), now)
				last = now
			}
		}
		// Wait for the next event, or --interval.
		events, newest, err := fetchEvents(ctx, f, seq, "", wait)
		switch {
		case waitExpired(ctx):
			return fmt.Errorf("job %s is still %s after %v (--wait-timeout)", id, j.Status, o.waitTimeout)
		case ctx.Err() != nil:
			return context.Cause(ctx)
		case err != nil && lost(err):
			continue
		case err != nil:
			return err
		}
		seq = max(seq, newest)
		for _, e := range events {
			seq = max(seq, e.Seq)
		}
	}
}

// waitExpired reports whether --wait-timeout has passed. A dial that the
// deadline cut short may fail before the context's own timer has fired, so
// the deadline is read as well as the cause.
func waitExpired(ctx context.Context) bool {
	if errors.Is(context.Cause(ctx), errWaitTimeout) {
		return true
	}
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

// progressLine says where a job that has not ended is: its state, its
// round once it runs, and its reason (what it waits for).
func progressLine(j api.Job) string {
	s := string(j.Status)
	if j.Status == api.JobInProgress && j.Rounds > 0 {
		s += fmt.Sprintf(", round %d of %d done", j.RoundsDone, j.Rounds)
	}
	if j.Reason != "" {
		s += ": " + j.Reason
	}
	return s
}
