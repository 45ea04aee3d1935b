package main

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/cmd/internal/cli"
)

type eventsOptions struct {
	follow bool
	job    string
	after  int64
}

func newEventsCmd(f *factory) *cobra.Command {
	o := &eventsOptions{}
	cmd := &cobra.Command{
		Use:   "events",
		Short: "Print the federation's events: envoys coming and going, jobs and their rounds",
		Long: `Print what happened in the federation, oldest first: envoys registered,
online, offline and removed; jobs submitted, started, each round aggregated
(with its aggregated metrics), finished, failed, aborted and deleted.

The director keeps the newest events (director serve --event-history,
100,000 by default). Each event has a sequence number: --after SEQ prints
only those after it, so a script can pick up where it left off.

With --follow, fladmin keeps waiting for new events and prints each as it
happens, until ^C; with --job as well, it stops once that job has ended.
-o json prints one JSON object a line (with --follow too), -o yaml one YAML
document an event.`,
		Example: `  fladmin events
  fladmin events --follow
  fladmin events --job 3f2a9c1e --follow -o json | jq .metrics`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.after < 0 {
				return cli.Usagef("--after %d: must not be negative", o.after)
			}
			return o.run(cmd.Context(), f)
		},
	}
	cmd.Flags().BoolVarP(&o.follow, "follow", "f", false, "keep printing events as they happen")
	cmd.Flags().StringVarP(&o.job, "job", "j", "", "only the events of this job (id or unique prefix)")
	cmd.Flags().Int64Var(&o.after, "after", 0, "only events after this sequence number")
	return cmd
}

// eventsHeader is the events table's header; eventWidths the widths of
// its columns on a terminal (the table is written as events arrive, so
// they are fixed up front; a longer detail wraps).
var (
	eventsHeader = []string{"SEQ", "TIME", "KIND", "JOB", "ENVOY", "DETAIL"}
	eventWidths  = []int{7, 19, 15, 8, 14, 48}
)

// pollWait is how long one long poll of the event stream waits for news:
// under the idle timeout of an admin exchange (--timeout) at both ends.
func (f *factory) pollWait() time.Duration {
	return max(min(20*time.Second, f.timeout-5*time.Second), time.Second)
}

// fetchEvents asks for the events after seq (of job, when set), waiting up
// to wait for them; it returns them and the newest seq the director has.
func fetchEvents(ctx context.Context, f *factory, seq int64, job string, wait time.Duration) ([]api.Event, int64, error) {
	command := fmt.Sprintf("%s -a %d -w %.3f", api.CmdGetEvents, seq, wait.Seconds())
	if job != "" {
		command += " -j " + job
	}
	reply, err := f.do(ctx, command)
	if err != nil {
		return nil, 0, err
	}
	var events []api.Event
	var last int64
	if err := reply.Into(api.MetaEvents, &events); err != nil {
		return nil, 0, err
	}
	if err := reply.Into(api.MetaLastSeq, &last); err != nil {
		return nil, 0, err
	}
	return events, last, nil
}

func (o *eventsOptions) run(ctx context.Context, f *factory) (err error) {
	var tab *table
	defer func() {
		if tab != nil {
			if cerr := tab.close(); err == nil {
				err = cerr
			}
		}
	}()
	if !f.structured() {
		var widths []int
		if f.stdoutIsTerminal() {
			widths = eventWidths
		}
		if tab, err = f.newTable(eventsHeader, widths, true); err != nil {
			return err
		}
	}
	seq := o.after
	var printed []api.Event // only without --follow and -o json/yaml
	for {
		wait := time.Duration(0)
		if o.follow {
			wait = f.pollWait()
		}
		events, _, err := fetchEvents(ctx, f, seq, o.job, wait)
		if err != nil {
			return err
		}
		ended := false
		for _, e := range events {
			seq = e.Seq
			if f.structured() {
				if o.follow {
					err = f.printRecord(e)
				} else {
					printed = append(printed, e)
				}
			} else {
				err = tab.append(eventRow(e))
			}
			if err != nil {
				return err
			}
			ended = ended || (o.job != "" && jobEnded(e.Kind))
		}
		switch {
		case ended && o.follow:
			return nil
		case !o.follow && len(events) == 0:
			if f.structured() {
				if printed == nil {
					printed = []api.Event{}
				}
				return f.print(printed)
			}
			return nil
		}
	}
}

// jobEnded says whether an event of this kind is a job's last.
func jobEnded(k api.EventKind) bool {
	switch k {
	case api.EventJobFinished, api.EventJobFailed, api.EventJobAborted, api.EventJobDeleted:
		return true
	}
	return false
}

// eventRow is an event as a table row: its message, and a round's
// metrics sorted by name.
func eventRow(e api.Event) []string {
	detail := e.Message
	if len(e.Metrics) > 0 {
		parts := make([]string, 0, len(e.Metrics))
		for _, k := range slices.Sorted(maps.Keys(e.Metrics)) {
			parts = append(parts, k+"="+formatMetric(e.Metrics[k]))
		}
		detail = strings.TrimSpace(detail + " " + strings.Join(parts, " "))
	}
	job := e.Job
	if len(job) > 8 {
		job = job[:8]
	}
	return []string{strconv.FormatInt(e.Seq, 10), fmtTime(e.Time), string(e.Kind), orDash(job), orDash(e.Envoy), orDash(detail)}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
