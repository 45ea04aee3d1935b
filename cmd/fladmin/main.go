// Command fladmin is fedplane's admin CLI: it submits jobs and shows the
// federation through the director's admin port, with NVIDIA FLARE's admin
// exchange. See `fladmin --help`.
package main

import (
	"os"

	"github.com/spf13/cobra"

	"github.com/fedplane/fedplane/cmd/internal/cli"
)

func main() {
	os.Exit(cli.Main(newRootCmd(newFactory()), os.Args[1:], os.Stderr))
}

func newRootCmd(f *factory) *cobra.Command {
	root := &cobra.Command{
		Use:   "fladmin",
		Short: "fedplane admin CLI: submit jobs and watch the federation",
		Long: `fladmin drives a fedplane federation through the director's admin port
(NVIDIA FLARE's admin exchange): it submits job folders, lists and manages
jobs, and shows the envoys.

--addr (or FLADMIN_ADDR) may list the admin ports of several replicas of
the director, comma-separated, for a site without a load balancer in front
of them: each request goes to the first that takes the connection, in the
order given. A port that refuses the connection, does not answer within
--timeout or fails the TLS handshake is passed over; an answer, a refusal
included, is final, and a request once sent is never sent to another. With
TLS each replica's certificate must carry the host it is dialled as, unless
--tls-server-name names the one they all carry.

Tables are boxed on a terminal and tab-separated lines (a header line, then
one line per row) when stdout is not a terminal; -o json and -o yaml print
the director's replies with the same keys.

Exit status: 0 on success, 1 on an error (including a refusal by the
director), 2 on a usage error, 130 on ^C.`,
		Version: cli.Version,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return f.validate()
		},
	}
	root.SetOut(f.stdout)
	f.addFlags(root)
	root.AddCommand(
		newSubmitJobCmd(f),
		newListJobsCmd(f),
		newShowJobCmd(f),
		newWaitJobCmd(f),
		newMetricsCmd(f),
		newDownloadJobCmd(f),
		newLogsCmd(f),
		newAbortJobCmd(f),
		newDeleteJobCmd(f),
		newListEnvoysCmd(f),
		newRemoveEnvoyCmd(f),
		newStatusCmd(f),
		newEventsCmd(f),
		newAuditCmd(f),
		newConsoleCmd(f),
		newVersionCmd(f),
	)
	return root
}
