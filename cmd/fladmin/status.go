package main

import (
	"fmt"
	"maps"
	"slices"

	"github.com/spf13/cobra"
)

func newStatusCmd(f *factory) *cobra.Command {
	return &cobra.Command{
		Use:   "status",
		Short: "Show the director's version, uptime, envoys and jobs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			reply, err := f.do(cmd.Context(), "check_status")
			if err != nil {
				return err
			}
			meta := maps.Clone(reply)
			delete(meta, "status")
			if f.output == "json" {
				return f.printJSON(meta)
			}
			var st struct {
				Version      string         `json:"version"`
				Uptime       string         `json:"uptime"`
				Envoys       int            `json:"envoys"`
				EnvoysOnline int            `json:"envoysOnline"`
				Jobs         map[string]int `json:"jobs"`
			}
			for k, dst := range map[string]any{"version": &st.Version, "uptime": &st.Uptime, "envoys": &st.Envoys, "envoysOnline": &st.EnvoysOnline, "jobs": &st.Jobs} {
				if err := reply.Into(k, dst); err != nil {
					return err
				}
			}
			fmt.Fprintf(f.stdout, "Director:  %s at %s, up %s\n", st.Version, f.addr, st.Uptime)
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
