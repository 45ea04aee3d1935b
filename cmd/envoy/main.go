// Command envoy is fedplane's agent at a data site: `envoy start` runs it.
// See `envoy --help`.
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
		Use:   "envoy",
		Short: "fedplane envoy: the agent at a data site",
		Long: `The envoy runs next to a data shard that never leaves its site: it registers
the shard with the director, keeps it alive with health checks, and runs the
training command of the experiments the director hands it.`,
		Version: cli.Version,
	}
	root.AddCommand(newStartCmd(), newPendingCmd(), newApproveCmd(), newRejectCmd())
	return root
}
