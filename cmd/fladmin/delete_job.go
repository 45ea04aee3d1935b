package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/fedplane/fedplane/api"
)

func newDeleteJobCmd(f *factory) *cobra.Command {
	return &cobra.Command{
		Use:   "delete-job JOB_ID",
		Short: "Delete a job that is not running, with its stored files",
		Long: `Delete a job and everything the director stored for it. A running job
is refused: abort it first. JOB_ID may be the full id or a unique prefix of
at least 8 characters.`,
		Args: jobIDArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			reply, err := f.do(cmd.Context(), api.CmdDeleteJob+" "+args[0])
			if err != nil {
				return err
			}
			var id string
			if err := reply.Into(api.MetaJobID, &id); err != nil {
				return err
			}
			if f.structured() {
				return f.print(map[string]string{api.MetaJobID: id, "status": "deleted"})
			}
			_, err = fmt.Fprintf(f.stdout, "Deleted job %s\n", id)
			return err
		},
	}
}
