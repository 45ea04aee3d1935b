package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/fedplane/fedplane/api"
)

func newAbortJobCmd(f *factory) *cobra.Command {
	return &cobra.Command{
		Use:   "abort-job JOB_ID",
		Short: "Abort a pending or running job",
		Long: `Abort a job that has not ended. JOB_ID may be the full id or a unique
prefix of at least 8 characters.`,
		Args: jobIDArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			reply, err := f.do(cmd.Context(), api.CmdAbortJob+" "+args[0])
			if err != nil {
				return err
			}
			var j api.Job
			if err := reply.Into("job", &j); err != nil {
				return err
			}
			if f.structured() {
				return f.print(map[string]string{api.MetaJobID: j.JobID, "status": string(j.Status)})
			}
			_, err = fmt.Fprintf(f.stdout, "Aborted job %s\n", j.JobID)
			return err
		},
	}
}
