package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/spf13/cobra"

	"github.com/fedplane/fedplane/api"
)

func newStatusCmd(f *factory) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the director's version, uptime, envoys and jobs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			reply, err := f.do(cmd.Context(), api.CmdCheckStatus)
			if err != nil {
				return err
			}
			meta := maps.Clone(reply)
			delete(meta, "status")
			if f.structured() {
				return f.print(meta)
			}
			// The reply's meta is a DirectorStatus beside "status".
			b, err := json.Marshal(meta)
			if err != nil {
				return err
			}
			var st api.DirectorStatus
			if err := json.Unmarshal(b, &st); err != nil {
				return fmt.Errorf("check_status reply: %w", err)
			}
			fmt.Fprintf(f.stdout, "Director:  %s at %s, up %s\n", st.Version, f.director(), st.Uptime)
			fmt.Fprintf(f.stdout, "Envoys:    %d registered, %d online\n", st.Envoys, st.EnvoysOnline)
			fmt.Fprint(f.stdout, "Jobs:     ")
			if len(st.Jobs) == 0 {
				fmt.Fprint(f.stdout, " none")
			}
			for _, s := range slices.Sorted(maps.Keys(st.Jobs)) {
				fmt.Fprintf(f.stdout, " %s %d", s, st.Jobs[s])
			}
			_, err = fmt.Fprintln(f.stdout)
			return err
		},
	}
}
