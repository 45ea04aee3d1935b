package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/cmd/internal/cli"
)

type auditOptions struct {
	since  string
	caller string
}

func newAuditCmd(f *factory) *cobra.Command {
	o := &auditOptions{}
	cmd := &cobra.Command{
		Use:   "audit",
		Short: "Print the audit trail: who called what, naming what, and how it ended (project admins)",
		Long: `Print the director's audit trail, oldest first: every admin command (this
CLI's and FLARE's admin client's) and every call an admin identity makes on
the OpenFL gRPC port (frontends), with the caller's certificate name,
organisation, kind and role, the address it came from, what it named and
the outcome ("ok", or the refusal and why). Calls that were refused are
there whoever made them, an envoy's too; an envoy's own work (heartbeats,
tasks, reports) is not, it shows in fladmin events.

The trail is append-only: the director's store refuses to change or delete
a record. Only a project_admin may read it.

--since takes an RFC 3339 time (2026-12-03T10:00:00Z) or a duration back
from now (24h, 90m).`,
		Example: `  fladmin audit --since 24h
  fladmin audit --caller alice@hospital-a -o json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.Context(), f)
		},
	}
	cmd.Flags().StringVar(&o.since, "since", "", "only calls at or after this time (RFC 3339) or this long ago (a duration)")
	cmd.Flags().StringVar(&o.caller, "caller", "", "only calls by this caller (certificate name)")
	return cmd
}

// auditHeader is the audit table's header.
var auditHeader = []string{"SEQ", "TIME", "CALLER", "ROLE", "REMOTE", "ACTION", "TARGET", "OUTCOME"}

// parseSince reads --since: an RFC 3339 time or a duration before now.
func parseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, cli.Usagef("--since %q: give an RFC 3339 time (2026-12-03T10:00:00Z) or a duration (24h)", s)
}

func (o *auditOptions) run(ctx context.Context, f *factory) error {
	since, err := parseSince(o.since, time.Now())
	if err != nil {
		return err
	}
	if o.caller != "" {
		if err := api.ValidateName("--caller", o.caller); err != nil {
			return cli.Usagef("%v", err)
		}
	}
	var all []api.AuditRecord
	var after int64
	for {
		command := fmt.Sprintf("%s -a %d -m %d", api.CmdGetAudit, after, api.MaxEventPage)
		if !since.IsZero() {
			command += " -s " + since.UTC().Format(time.RFC3339Nano)
		}
		if o.caller != "" {
			command += " -c " + o.caller
		}
		reply, err := f.do(ctx, command)
		if err != nil {
			return err
		}
		var page []api.AuditRecord
		if err := reply.Into(api.MetaAudit, &page); err != nil {
			return err
		}
		all = append(all, page...)
		if len(page) < api.MaxEventPage {
			break
		}
		after = page[len(page)-1].Seq
	}
	if f.structured() {
		if all == nil {
			all = []api.AuditRecord{}
		}
		return f.print(all)
	}
	rows := make([][]string, 0, len(all))
	for _, a := range all {
		outcome := a.Outcome
		if a.Detail != "" {
			outcome += ": " + a.Detail
		}
		rows = append(rows, []string{strconv.FormatInt(a.Seq, 10), fmtTime(a.Time), a.Caller, orDash(a.Role), orDash(a.Remote), a.Action, orDash(a.Target), outcome})
	}
	return f.printTable(auditHeader, rows)
}
