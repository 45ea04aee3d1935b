package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/spf13/cobra"

	"github.com/fedplane/fedplane/api"
)

func newListEnvoysCmd(f *factory) *cobra.Command {
	return &cobra.Command{
		Use:   "list-envoys",
		Short: "List the federation's envoys and whether they are online",
		Long: `List the federation's envoys: whether each is online, when the director
last heard from it, the experiment it runs, its GPUs (as an OpenFL envoy
reports them; -o json lists each device) and its shard.

The director answers a page of envoys at a time (list_envoys -a NAME -m N);
fladmin asks for every page and prints the envoys as they arrive, so a
federation of 100,000 envoys lists in full. Piped, or with -o json or
-o yaml, rows are written as each page arrives; on a terminal the boxed
table is drawn once every envoy is in.`,
		Example: `  fladmin list-envoys
  fladmin list-envoys | awk -F'\t' '$2 == "no" { print $1 }'   # the offline ones
  fladmin list-envoys -o yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			if f.structured() {
				return f.printElements(func(each func(dec *json.Decoder) error) error {
					return f.eachEnvoy(ctx, each)
				})
			}
			return f.printEnvoys(ctx)
		},
	}
}

// envoyHeader is list-envoys' table header.
var envoyHeader = []string{"NAME", "ONLINE", "LAST SEEN", "EXPERIMENT", "SAMPLES", "GPU", "SHARD"}

// printEnvoys prints the envoys as a table: row by row as they arrive when
// stdout is not a terminal, boxed once all are in when it is (the columns'
// widths need every row).
func (f *factory) printEnvoys(ctx context.Context) error {
	var (
		tty  = f.stdoutIsTerminal()
		t    *table
		rows [][]string
	)
	err := f.eachEnvoy(ctx, func(dec *json.Decoder) error {
		// Each envoy is decoded as it arrives: with 10,000 envoys a
		// reply is 3 MiB, and holding it whole before decoding it doubled
		// fladmin's memory and time.
		var e api.Envoy
		if err := dec.Decode(&e); err != nil {
			return err
		}
		exp := e.Experiment
		if exp == "" {
			exp = "-"
		}
		row := []string{e.Name, yesNo(e.Online), fmtTime(e.LastSeen), exp, strconv.FormatUint(e.Samples, 10), api.GPUSummary(e.CUDADevices), e.Shard}
		if tty {
			rows = append(rows, row)
			return nil
		}
		if t == nil {
			var err error
			if t, err = f.newTable(envoyHeader, nil, false); err != nil {
				return err
			}
		}
		return t.append(row)
	})
	if t != nil {
		if cerr := t.close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return err
	}
	if t == nil && len(rows) == 0 {
		_, err := fmt.Fprintln(f.stdout, "No envoys registered.")
		return err
	}
	if tty {
		return f.printTable(envoyHeader, rows)
	}
	return nil
}

// eachEnvoy calls each for every envoy of the federation, by name, page
// after page of list_envoys, with the decoder at one envoy. The cursor the
// director hands back goes into the next command line, so it must be a
// name (one word) and must move forward: a director that answers
// otherwise cannot make fladmin loop or send words of its choosing.
func (f *factory) eachEnvoy(ctx context.Context, each func(dec *json.Decoder) error) error {
	after := ""
	for {
		command := fmt.Sprintf("%s -m %d", api.CmdListEnvoys, api.MaxEnvoyPage)
		if after != "" {
			command += " -a " + after
		}
		l := &listStream{key: api.MetaEnvoys, each: each}
		meta, err := f.doStream(ctx, command, l.stream)
		if err != nil {
			return err
		}
		if !l.seen {
			return fmt.Errorf("reply meta has no %q", api.MetaEnvoys)
		}
		next := ""
		if _, ok := meta[api.MetaNextAfter]; ok {
			if err := meta.Into(api.MetaNextAfter, &next); err != nil {
				return err
			}
		}
		switch {
		case next == "":
			return nil
		case api.ValidateName(api.MetaNextAfter, next) != nil:
			return fmt.Errorf("director's reply: %w", api.ValidateName(api.MetaNextAfter, next))
		case next <= after:
			return fmt.Errorf("director's reply: %s %q does not move past %q", api.MetaNextAfter, next, after)
		}
		after = next
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
