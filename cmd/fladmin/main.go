// Command fladmin is fedplane's admin CLI. See `fladmin --help`.
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
	return &cobra.Command{
		Use:   "fladmin",
		Short: "fedplane admin CLI: submit jobs and watch the federation",
		Long: `fladmin drives a fedplane federation through the director's admin port,
with NVIDIA FLARE's admin exchange.`,
		Version: cli.Version,
	}
}
