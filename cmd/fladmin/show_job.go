package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/fedplane/fedplane/api"
)

func newShowJobCmd(f *factory) *cobra.Command {
	return &cobra.Command{
		Use:   "show-job JOB_ID",
		Short: "Show one job: status, reason, times and its job.json",
		Long: `Show one job. JOB_ID may be the full id or a unique prefix of at least
8 characters.`,
		Example: `  fladmin show-job 3f2a9c1e
  fladmin show-job 3f2a9c1e -o json`,
		Args: jobIDArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			reply, err := f.do(cmd.Context(), api.CmdGetJobMeta+" "+args[0])
			if err != nil {
				return err
			}
			if f.structured() {
				var raw json.RawMessage
				if err := reply.Into(api.MetaJob, &raw); err != nil {
					return err
				}
				return f.print(raw)
			}
			var j api.Job
			if err := reply.Into(api.MetaJob, &j); err != nil {
				return err
			}
			return printJob(f, j)
		},
	}
}

func printJob(f *factory, j api.Job) error {
	// Aligned on a terminal; "Key:<tab>value" lines on a pipe, like tables.
	var w io.Writer = f.stdout
	tw := tabwriter.NewWriter(f.stdout, 0, 4, 2, ' ', 0)
	if f.stdoutIsTerminal() {
		w = tw
	}
	fields := []struct{ k, v string }{
		{"Job ID", j.JobID},
		{"Name", j.Name},
		{"Status", string(j.Status)},
		{"Reason", j.Reason},
		{"Submitter", j.Submitter},
		{"Submitted", fmtTime(j.SubmitTime)},
		{"Started", fmtTime(j.StartTime)},
		{"Ended", fmtTime(j.EndTime)},
		{"Duration", j.Duration},
		{"Rounds", fmt.Sprintf("%d of %d done", j.RoundsDone, j.Rounds)},
		{"Archive", fmt.Sprintf("%d bytes, sha256 %s", j.ArchiveSize, j.ArchiveSHA256)},
		{"Participation", participationLine(j.Participation)},
		{"Stored", storedLine(j.Storage)},
		{"Retention", retentionLine(j.Storage)},
	}
	for _, kv := range fields {
		if kv.v == "" {
			continue
		}
		fmt.Fprintf(w, "%s:\t%s\n", kv.k, kv.v)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(j.Envoys) > 0 {
		rows := make([][]string, 0, len(j.Envoys))
		for _, p := range j.Envoys {
			reason := p.Reason
			if reason == "" {
				reason = "-"
			}
			rows = append(rows, []string{p.Name, string(p.Status), strconv.Itoa(p.Round), fmtTime(p.Updated), reason})
		}
		fmt.Fprintln(f.stdout, "Envoys:")
		if err := f.printTable([]string{"ENVOY", "STATE", "ROUND", "UPDATED", "REASON"}, rows); err != nil {
			return err
		}
	}
	if len(j.Manifest) > 0 {
		var buf bytes.Buffer
		if json.Indent(&buf, j.Manifest, "  ", "  ") == nil {
			fmt.Fprintf(f.stdout, "job.json:\n  %s\n", buf.String())
		}
	}
	return nil
}

// participationLine says how the job's rounds take their envoys, defaults
// named as such.
func participationLine(p *api.Participation) string {
	if p == nil {
		return ""
	}
	s := fmt.Sprintf("%d of %d envoys a round", p.PerRound, p.Participants)
	if p.SamplingSeed != nil {
		s += fmt.Sprintf(" (sampled, seed %d", *p.SamplingSeed)
		if len(p.Sampled) > 0 {
			s += "; this round: " + strings.Join(p.Sampled, ", ")
		}
		s += ")"
	}
	s += fmt.Sprintf("; quorum %d; round deadline %s", p.Quorum, p.RoundDeadline)
	if p.DeadlineIsDefault {
		s += " (default: train.timeout + 10m)"
	}
	return s
}

// storedLine says how much of the director's disk the job holds, by part.
func storedLine(s *api.Storage) string {
	if s == nil {
		return ""
	}
	models := "models"
	if s.Models == 1 {
		models = "model"
	}
	parts := []string{"archive " + humanBytes(s.ArchiveBytes), fmt.Sprintf("%d %s %s", s.Models, models, humanBytes(s.ModelBytes))}
	for _, p := range []struct {
		name string
		n    int64
	}{{"server state", s.StateBytes}, {"reports", s.ResultsBytes}, {"logs", s.LogBytes}, {"other", s.OtherBytes}} {
		if p.n > 0 {
			parts = append(parts, p.name+" "+humanBytes(p.n))
		}
	}
	return fmt.Sprintf("%s (%s)", humanBytes(s.Bytes), strings.Join(parts, ", "))
}

// retentionLine says which round models keep_models keeps, the default
// named as such.
func retentionLine(s *api.Storage) string {
	if s == nil {
		return ""
	}
	var what string
	switch s.KeepModels {
	case "last":
		what = "the newest model only"
	case "best":
		what = "the best model and the newest"
	case "all":
		what = "every round's model"
	default:
		what = "the newest " + s.KeepModels + " models and the best"
	}
	line := fmt.Sprintf("keep_models %q: %s", s.KeepModels, what)
	if s.KeepIsDefault {
		line += " (default)"
	}
	return line
}
