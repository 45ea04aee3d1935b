package main

import (
	"encoding/json"
	"fmt"
	"os/user"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/fedplane/fedplane/cmd/internal/cli"
	"github.com/fedplane/fedplane/envoy"
)

// The site operator's commands for "approval: manual" in a site policy. They
// work on the envoy's work dir, so run them as the envoy's user with the
// envoy's --work-dir.

const workDirUsage = "the envoy's --work-dir (where it keeps what waits for approval)"

func newPendingCmd() *cobra.Command {
	var workDir, output string
	cmd := &cobra.Command{
		Use:   "pending",
		Short: "List the jobs waiting for this site's approval",
		Long: `List the jobs that the running envoy holds for the site operator's decision
(site policy "approval: manual"): each job's id, name, submitter (from the
certificate that signed it, verified against the federation's CA), training
command and archive digest. Approve one with "envoy approve JOB" or refuse it
with "envoy reject JOB --reason ...".`,
		Example: `  envoy pending --work-dir /var/lib/envoy
  envoy pending -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return cli.Usagef("--output %q: want table or json", output)
			}
			jobs, err := envoy.ListPending(workDir)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if output == "json" {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(jobs)
			}
			if len(jobs) == 0 {
				_, err := fmt.Fprintln(w, "No job waits for approval.")
				return err
			}
			tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "JOB ID\tNAME\tSUBMITTER\tCOMMAND\tARCHIVE SHA256\tWAITING")
			for _, j := range jobs {
				who := j.Submitter
				if j.SubmitterOrg != "" {
					who += " (" + j.SubmitterOrg + ")"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", j.JobID, j.Name, who, strings.Join(quoteArgs(j.Command), " "),
					j.SHA256, time.Since(j.Since).Round(time.Second))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&workDir, "work-dir", envoy.DefaultWorkDir, workDirUsage)
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

func newApproveCmd() *cobra.Command {
	var workDir string
	cmd := &cobra.Command{
		Use:   "approve JOB",
		Short: "Let a job that waits for this site's approval run here",
		Long: `Approve the waiting job JOB (its id, or the first 8 or more characters of
it; "envoy pending" lists them). The approval holds for that job's archive
digest only: a different archive under the same id waits again. The running
envoy picks the decision up within a second and starts the job.`,
		Example: `  envoy approve 5f2c9a1e --work-dir /var/lib/envoy`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			j, err := envoy.Decide(workDir, args[0], true, "", operator())
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "Approved job %s (%s, submitted by %s).\n", j.JobID, j.Name, j.Submitter)
			return err
		},
	}
	cmd.Flags().StringVar(&workDir, "work-dir", envoy.DefaultWorkDir, workDirUsage)
	return cmd
}

func newRejectCmd() *cobra.Command {
	var workDir, reason string
	cmd := &cobra.Command{
		Use:   "reject JOB --reason TEXT",
		Short: "Refuse a job that waits for this site's approval",
		Long: `Refuse the waiting job JOB (its id or a prefix of 8 or more characters).
The envoy reports the refusal to the director with the reason, and the job
shows "site NAME refused the job: REASON".`,
		Example: `  envoy reject 5f2c9a1e --reason "trains on columns we do not share"`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(reason) == "" {
				return cli.Usagef("--reason is required: the director and the submitter are told why the site refuses the job")
			}
			j, err := envoy.Decide(workDir, args[0], false, reason, operator())
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "Rejected job %s (%s, submitted by %s).\n", j.JobID, j.Name, j.Submitter)
			return err
		},
	}
	cmd.Flags().StringVar(&workDir, "work-dir", envoy.DefaultWorkDir, workDirUsage)
	cmd.Flags().StringVar(&reason, "reason", "", "why the site refuses the job (required; sent to the director)")
	return cmd
}

// operator names who decided, for the record.
func operator() string {
	if u, err := user.Current(); err == nil {
		return u.Username
	}
	return ""
}

// quoteArgs quotes the words of a command that need it to read back.
func quoteArgs(argv []string) []string {
	out := make([]string, len(argv))
	for i, a := range argv {
		if a == "" || strings.ContainsAny(a, " \t\n'\"\\$") {
			a = fmt.Sprintf("%q", a)
		}
		out[i] = a
	}
	return out
}
