// Command director is fedplane's coordinating service: `director serve` runs
// it. See `director --help`.
package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/fedplane/fedplane/cmd/internal/cli"
)

func main() {
	os.Exit(cli.Main(newRootCmd(), os.Args[1:], os.Stderr))
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "director",
		Short: "fedplane director: the federation's control plane",
		Long: `The director coordinates a federation: it keeps envoys and experiments in
SQLite (or PostgreSQL, which several directors can share), serves OpenFL's Director and Aggregator gRPC services to envoys and
frontends, and answers fladmin on its admin port.`,
		Version: cli.Version,
	}
	root.AddCommand(newServeCmd())
	root.AddCommand(newPKICmd())
	root.AddCommand(newMigrateStoreCmd())
	return root
}
