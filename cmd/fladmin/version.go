package main

import (
	"fmt"
	"runtime"

	"github.com/spf13/cobra"

	"github.com/fedplane/fedplane/cmd/internal/cli"
)

func newVersionCmd(f *factory) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print fladmin's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if f.structured() {
				return f.print(map[string]string{"version": cli.Version, "go": runtime.Version()})
			}
			_, err := fmt.Fprintf(f.stdout, "fladmin %s (%s)\n", cli.Version, runtime.Version())
			return err
		},
	}
}
