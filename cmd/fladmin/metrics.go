package main

import (
	"context"
	"fmt"
	"math"
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
started from.

A value that is a whole number prints as an integer and any other with four
decimals, so a count such as n_samples reads 6000 and a loss 0.6931.

With --follow, each round's row is printed as soon as the round is in, until
the job ends; the header and the rows are those the table without --follow
prints, and the columns are the metrics of the first round. The job's final
status follows the table (on stderr when stdout is not a terminal).

-o json prints every metric (each envoy's and the aggregated ones) as a JSON
list, -o yaml as a YAML list; with --follow, one JSON object a line, or one
YAML document a metric.`,
		Example: `  fladmin metrics 3f2a9c1e
  fladmin metrics 3f2a9c1e --follow
  fladmin metrics 3f2a9c1e | cut -f1,3`,
		Args: jobIDArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.interval <= 0 {
				return cli.Usagef("--interval %v: must be positive", o.interval)
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

// metricsHeader is the header of a table of rounds: ROUND, then the
// metric names in upper case.
func metricsHeader(names []string) []string {
	return append([]string{"ROUND"}, upper(names)...)
}

// metricsRow formats one round's values in the order of names, "-" for a
// metric the round lacks. The table and --follow both print rows made here.
func metricsRow(round int, names []string, vals map[string]float64) []string {
	r := []string{strconv.Itoa(round)}
	for _, n := range names {
		if v, ok := vals[n]; ok {
			r = append(r, formatMetric(v))
		} else {
			r = append(r, "-")
		}
	}
	return r
}

// formatMetric prints a whole number as an integer, so that a count such
// as n_samples reads 6000, and any other value with four decimals. The
// rule looks at one value only, so that --follow, which prints a round
// before it has seen the next, formats every row as the one-shot table does.
func formatMetric(v float64) string {
	if v == 0 {
		return "0" // and not "-0"
	}
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'f', 4, 64)
}

// minMetricWidth is the narrowest a metric's column is drawn on a terminal,
// so that --follow, whose columns are fixed by the first round, has room
// for later values: four decimals and five digits before the point.
const minMetricWidth = 10

// metricsWidths are the column widths of a table of rounds on a terminal:
// each column's widest cell among header and rows, and at least
// minMetricWidth for a metric. The one-shot table passes all its rows,
// --follow the first rounds it prints; where later values fit, both draw
// the same table.
func metricsWidths(header []string, rows [][]string) []int {
	w := columnWidths(header, rows)
	for i := 1; i < len(w); i++ {
		w[i] = max(w[i], minMetricWidth)
	}
	return w
}

// newMetricsTable starts the table of rounds whose first rows are rows.
func (f *factory) newMetricsTable(names []string, rows [][]string, flush bool) (*table, error) {
	header := metricsHeader(names)
	var widths []int
	if f.stdoutIsTerminal() {
		widths = metricsWidths(header, rows)
	}
	return f.newTable(header, widths, flush)
}

func (o *metricsOptions) runOnce(ctx context.Context, f *factory, id string) error {
	ms, _, _, err := fetchMetrics(ctx, f, id, 0)
	if err != nil {
		return err
	}
	if f.structured() {
		if ms == nil {
			ms = []api.Metric{}
		}
		return f.print(ms)
	}
	rounds, names, values := pivot(ms)
	if len(rounds) == 0 {
		_, err := fmt.Fprintln(f.stdout, "No metrics yet.")
		return err
	}
	rows := make([][]string, 0, len(rounds))
	for _, r := range rounds {
		rows = append(rows, metricsRow(r, names, values[r]))
	}
	t, err := f.newMetricsTable(names, rows, false)
	if err != nil {
		return err
	}
	return t.appendAll(rows)
}

// runFollow prints rounds as their aggregated metrics arrive: the same
// header and rows as runOnce, each row as soon as its round is in, under
// the columns of the first round printed.
func (o *metricsOptions) runFollow(ctx context.Context, f *factory, id string) (err error) {
	var (
		seq     int64
		names   []string
		printed = map[int]bool{}
		all     []api.Metric
		tab     *table
	)
	defer func() {
		// The bottom border, also when the director breaks off or ^C.
		if tab != nil {
			if cerr := tab.close(); err == nil {
				err = cerr
			}
		}
	}()
	t := time.NewTicker(o.interval)
	defer t.Stop()
	for {
		ms, status, _, err := fetchMetrics(ctx, f, id, seq)
		if err != nil {
			return err
		}
		for _, m := range ms {
			seq = max(seq, m.Seq)
			if f.structured() {
				if err := f.printRecord(m); err != nil {
					return err
				}
			}
		}
		all = append(all, ms...)
		if !f.structured() {
			rounds, ns, values := pivot(all)
			var rows [][]string
			for _, r := range rounds {
				if printed[r] {
					continue
				}
				if names == nil {
					names = ns
				}
				printed[r] = true
				rows = append(rows, metricsRow(r, names, values[r]))
			}
			if tab == nil && len(rows) > 0 {
				if tab, err = f.newMetricsTable(names, rows, true); err != nil {
					return err
				}
			}
			for _, r := range rows {
				if err := tab.append(r); err != nil {
					return err
				}
			}
		}
		if status.Terminal() {
			if f.structured() {
				return nil
			}
			if tab != nil {
				err := tab.close()
				tab = nil
				if err != nil {
					return err
				}
			} else {
				fmt.Fprintln(f.stdout, "No metrics.")
			}
			f.notice("Job %s %s", id, status)
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

func upper(names []string) []string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = strings.ToUpper(n)
	}
	return out
}
