package main

import (
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
last heard from it, the experiment it runs, and its shard.`,
		Example: `  fladmin list-envoys
  fladmin list-envoys | awk -F'\t' '$2 == "no" { print $1 }'   # the offline ones
  fladmin list-envoys -o yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.structured() {
				return f.printList(cmd.Context(), api.CmdListEnvoys, api.MetaEnvoys)
			}
			// The list is decoded as it arrives, envoy by envoy: with
			// 10,000 envoys the reply is 3 MiB, and holding it whole
			// before decoding it doubled fladmin's memory and time.
			var envoys []api.Envoy
			err := f.doList(cmd.Context(), api.CmdListEnvoys, api.MetaEnvoys, func(dec *json.Decoder) error {
				var e api.Envoy
				if err := dec.Decode(&e); err != nil {
					return err
				}
				envoys = append(envoys, e)
				return nil
			})
			if err != nil {
				return err
			}
			header := []string{"NAME", "ONLINE", "LAST SEEN", "EXPERIMENT", "SAMPLES", "SHARD"}
			if len(envoys) == 0 {
				_, err := fmt.Fprintln(f.stdout, "No envoys registered.")
				return err
			}
			rows := make([][]string, 0, len(envoys))
			for _, e := range envoys {
				exp := e.Experiment
				if exp == "" {
					exp = "-"
				}
				rows = append(rows, []string{e.Name, yesNo(e.Online), fmtTime(e.LastSeen), exp, strconv.FormatUint(e.Samples, 10), e.Shard})
			}
			return f.printTable(header, rows)
		},
	}
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
