package admin

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/google/uuid"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/store"
)

// getEvents returns the federation's events after a sequence number, of
// one job when -j names it, waiting up to -w seconds for the next ones
// when there are none yet (a follower's long poll).
func (s *Server) getEvents(ctx context.Context, req *request) (*adminproto.Message, error) {
	fs := flag.NewFlagSet(api.CmdGetEvents, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	after := fs.Int64("a", 0, "after seq")
	jobArg := fs.String("j", "", "job id")
	maxEvents := fs.Int("m", api.DefaultEventPage, "max events")
	wait := fs.Float64("w", 0, "wait seconds")
	if err := fs.Parse(req.args); err != nil {
		return nil, s.usage(req.name, err.Error())
	}
	switch {
	case fs.NArg() > 0:
		return nil, s.usage(req.name, "unexpected arguments")
	case *after < 0:
		return nil, s.usage(req.name, "-a must not be negative")
	case *maxEvents < 1 || *maxEvents > api.MaxEventPage:
		return nil, s.usage(req.name, fmt.Sprintf("-m must be between 1 and %d", api.MaxEventPage))
	case *wait < 0 || *wait > api.MaxEventWait.Seconds():
		return nil, s.usage(req.name, fmt.Sprintf("-w must be between 0 and %v seconds", api.MaxEventWait.Seconds()))
	}
	var job string
	if *jobArg != "" {
		e, err := s.d.FindJob(ctx, *jobArg)
		switch {
		case err == nil:
			job = e.ID
		case errors.Is(err, api.ErrNotFound) && uuid.Validate(*jobArg) == nil:
			job = *jobArg // a deleted job's events outlive it
		default:
			return nil, err
		}
	}
	events, err := s.d.Events(ctx, *after, job, *maxEvents, time.Duration(*wait*float64(time.Second)))
	if err != nil {
		return nil, err
	}
	if events == nil {
		events = []api.Event{}
	}
	last := s.d.LastEventSeq()
	if n := len(events); n > 0 {
		last = max(last, events[n-1].Seq)
	}
	meta := map[string]any{api.MetaEvents: events, api.MetaLastSeq: last}
	table := [][]string{{"SEQ", "TIME", "KIND", "JOB", "ENVOY", "ROUND", "MESSAGE"}}
	for _, e := range events {
		round := ""
		if e.Round > 0 {
			round = strconv.Itoa(e.Round)
		}
		table = append(table, []string{strconv.FormatInt(e.Seq, 10), e.Time.UTC().Format(time.RFC3339), string(e.Kind), e.Job, e.Envoy, round, e.Message})
	}
	return replyOK(meta, adminproto.Item{Type: adminproto.TypeTable, Rows: table}), nil
}

// getAudit returns the audit trail: records after a sequence number, since
// a time, of one caller.
func (s *Server) getAudit(ctx context.Context, req *request) (*adminproto.Message, error) {
	fs := flag.NewFlagSet(api.CmdGetAudit, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	after := fs.Int64("a", 0, "after seq")
	since := fs.String("s", "", "since (RFC 3339)")
	caller := fs.String("c", "", "caller")
	maxRecords := fs.Int("m", api.DefaultEventPage, "max records")
	if err := fs.Parse(req.args); err != nil {
		return nil, s.usage(req.name, err.Error())
	}
	f := store.AuditFilter{After: *after, Caller: *caller, Max: *maxRecords}
	switch {
	case fs.NArg() > 0:
		return nil, s.usage(req.name, "unexpected arguments")
	case *after < 0:
		return nil, s.usage(req.name, "-a must not be negative")
	case *maxRecords < 1 || *maxRecords > api.MaxEventPage:
		return nil, s.usage(req.name, fmt.Sprintf("-m must be between 1 and %d", api.MaxEventPage))
	}
	if *since != "" {
		t, err := time.Parse(time.RFC3339Nano, *since)
		if err != nil {
			return nil, s.usage(req.name, fmt.Sprintf("-s %q is not an RFC 3339 time", *since))
		}
		f.Since = t
	}
	// Flushed first, so that a project admin sees the calls that came
	// just before this one.
	s.d.FlushJournal()
	recs, err := s.d.Audit(ctx, f)
	if err != nil {
		return nil, err
	}
	if recs == nil {
		recs = []api.AuditRecord{}
	}
	table := [][]string{{"SEQ", "TIME", "CALLER", "ROLE", "CHANNEL", "ACTION", "TARGET", "OUTCOME"}}
	for _, a := range recs {
		table = append(table, []string{strconv.FormatInt(a.Seq, 10), a.Time.UTC().Format(time.RFC3339), a.Caller, a.Role, a.Channel, a.Action, a.Target, a.Outcome})
	}
	return replyOK(map[string]any{api.MetaAudit: recs}, adminproto.Item{Type: adminproto.TypeTable, Rows: table}), nil
}
