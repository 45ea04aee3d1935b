package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/cmd/internal/cli"
)

func newRemoveEnvoyCmd(f *factory) *cobra.Command {
	return &cobra.Command{
		Use:   "remove-envoy NAME",
		Short: "Forget an envoy (project admins only)",
		Long: `Forget an envoy: the director drops it from its registry and its store,
and list-envoys no longer shows it. Its part in past jobs stays in their
history. An envoy taking part in a running job is refused: abort the job
first.

Removing is for a site that left the federation, not a ban: an envoy that
is still running hears at its next heartbeat that the director does not
know it, and registers again. To keep a site out, stop its envoy; its
certificate stays valid until it expires (see SECURITY.md).

Only a project_admin may remove envoys.`,
		Example: `  fladmin remove-envoy env_one`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := args[0]
			if err := api.ValidateName("NAME", name); err != nil {
				return &cli.UsageError{Err: err}
			}
			if _, err := f.do(cmd.Context(), api.CmdRemoveEnvoy+" "+name); err != nil {
				return err
			}
			if f.structured() {
				return f.print(map[string]string{api.MetaEnvoy: name, "status": "removed"})
			}
			_, err := fmt.Fprintf(f.stdout, "Removed envoy %s\n", name)
			return err
		},
	}
}
