package main

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/cmd/internal/cli"
)

type metricsOptions struct {
	follow   bool
	interval time.Duration
}

func newMetricsCmd(f *factory) *cobra.Command {
	o := &metricsOptions{}
	cmd := &cobra.Command{
		Use:   "metrics JOB_ID",
		Short: "Print a job's metrics: one row per round, aggregated values as columns",
		Long: `Print a job's metrics as a table with one row per round and one column per
metric: the sample-weighted mean over the round's envoys (origin
"aggregator"). A round's metrics describe the global model that round
started from. With --follow, rows are printed as rounds complete until the
job ends. -o json prints every api.Metric (each envoy's and the aggregated ones)
as JSON; with --follow, one JSON object per line.`,
		Example: `  fladmin metrics 3f2a9c1e
  fladmin metrics 3f2a9c1e --follow`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.interval <= 0 {
				return cli.Usagef("--interval must be positive")
			}
			if o.follow {
				return o.runFollow(cmd.Context(), f, args[0])
			}
			return o.runOnce(cmd.Context(), f, args[0])
		},
	}
	cmd.Flags().BoolVarP(&o.follow, "follow", "f", false, "keep printing new rounds until the job ends")
	cmd.Flags().DurationVar(&o.interval, "interval", time.Second, "with --follow, how often to ask the director")
	return cmd
}

// fetchMetrics returns the metrics stored after seq and the job's status.
func fetchMetrics(ctx context.Context, f *factory, id string, seq int64) ([]api.Metric, api.JobStatus, string, error) {
	reply, err := f.do(ctx, fmt.Sprintf("%s %s %d", api.CmdGetMetrics, id, seq))
	if err != nil {
		return nil, "", "", err
	}
	var ms []api.Metric
	var status api.JobStatus
	var jobID string
	if err := reply.Into(api.MetaMetrics, &ms); err != nil {
		return nil, "", "", err
	}
	if err := reply.Into(api.MetaJobStatus, &status); err != nil {
		return nil, "", "", err
	}
	if err := reply.Into(api.MetaJobID, &jobID); err != nil {
		return nil, "", "", err
	}
	return ms, status, jobID, nil
}

// pivot turns aggregated metrics into rows per round and sorted names.
func pivot(ms []api.Metric) (rounds []int, names []string, values map[int]map[string]float64) {
	values = map[int]map[string]float64{}
	for _, m := range ms {
		if m.Origin != api.OriginAggregator {
			continue
		}
		if values[m.Round] == nil {
			values[m.Round] = map[string]float64{}
			rounds = append(rounds, m.Round)
		}
		values[m.Round][m.Name] = m.Value
		if !slices.Contains(names, m.Name) {
			names = append(names, m.Name)
		}
	}
	slices.Sort(rounds)
	slices.Sort(names)
	return rounds, names, values
}

func row(round int, names []string, vals map[string]float64) []string {
	r := []string{strconv.Itoa(round)}
	for _, n := range names {
		if v, ok := vals[n]; ok {
			r = append(r, strconv.FormatFloat(v, 'f', 4, 64))
		} else {
			r = append(r, "-")
		}
	}
	return r
}

func (o *metricsOptions) runOnce(ctx context.Context, f *factory, id string) error {
	ms, _, _, err := fetchMetrics(ctx, f, id, 0)
	if err != nil {
		return err
	}
	if f.output == "json" {
		if ms == nil {
			ms = []api.Metric{}
		}
		return f.printJSON(ms)
	}
	rounds, names, values := pivot(ms)
	if len(rounds) == 0 {
		_, err := fmt.Fprintln(f.stdout, "No metrics yet.")
		return err
	}
	rows := make([][]string, 0, len(rounds))
	for _, r := range rounds {
		rows = append(rows, row(r, names, values[r]))
	}
	return f.printTable(append([]string{"ROUND"}, upper(names)...), rows)
}

// runFollow prints rounds as their aggregated metrics arrive.
func (o *metricsOptions) runFollow(ctx context.Context, f *factory, id string) error {
	var (
		seq     int64
		names   []string
		printed = map[int]bool{}
		all     []api.Metric
	)
	t := time.NewTicker(o.interval)
	defer t.Stop()
	for {
		ms, status, _, err := fetchMetrics(ctx, f, id, seq)
		if err != nil {
			return err
		}
		for _, m := range ms {
			seq = max(seq, m.Seq)
			if f.output == "json" {
				if err := f.printJSONLine(m); err != nil {
					return err
				}
			}
		}
		all = append(all, ms...)
		if f.output != "json" {
			rounds, ns, values := pivot(all)
			for _, r := range rounds {
				if printed[r] {
					continue
				}
				if names == nil {
					names = ns
					fmt.Fprintln(f.stdout, fixedRow(append([]string{"ROUND"}, upper(names)...)))
				}
				printed[r] = true
				fmt.Fprintln(f.stdout, fixedRow(row(r, names, values[r])))
			}
		}
		if status.Terminal() {
			if f.output != "json" && len(printed) == 0 {
				fmt.Fprintln(f.stdout, "No metrics.")
			}
			if f.output != "json" {
				fmt.Fprintf(f.stdout, "Job %s %s\n", id, status)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// fixedRow lays cells out in columns of a fixed width, so rows printed one
// at a time as rounds complete line up under the header.
func fixedRow(cells []string) string {
	var b strings.Builder
	for i, c := range cells {
		w := 7
		if i > 0 {
			w = 12
		}
		fmt.Fprintf(&b, "%-*s ", max(w, len(c)), c)
	}
	return strings.TrimRight(b.String(), " ")
}

func upper(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = strings.ToUpper(n)
	}
	return out
}
