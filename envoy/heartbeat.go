package envoy

import (
	"context"
	"errors"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/directorpb"
)

const (
	// defaultHealthCheckPeriod is the heartbeat period until the director
	// names its own.
	defaultHealthCheckPeriod = 10 * time.Second
	// minHealthCheckPeriod keeps a bogus period from the director from
	// turning the heartbeat into a busy loop.
	minHealthCheckPeriod = 10 * time.Millisecond
	// maxHeartbeatTimeout bounds one UpdateEnvoyStatus call (and so does
	// the period).
	maxHeartbeatTimeout = 10 * time.Second
)

// errStopped is the cause of an experiment's cancellation when the director
// names it in a heartbeat's fedplane-stop header.
var errStopped = errors.New("experiment stopped by the director")

// heartbeat sends UpdateEnvoyStatus at once and then every health check
// period after the last reply, until ctx ends. When the director does not
// know the envoy (NotFound) it registers again; on any other error it backs
// off (up to one period) and goes on. It returns nil when ctx ends, and an
// error only when the director refuses the shard on registering again.
func (e *Envoy) heartbeat(ctx context.Context) error {
	period := defaultHealthCheckPeriod
	b := newBackoff(minBackoff, period)
	for {
		var hdr metadata.MD
		req := &directorpb.UpdateEnvoyStatusRequest{Name: e.cfg.Name, IsExperimentRunning: e.running()}
		cctx, cancel := context.WithTimeout(ctx, min(period, maxHeartbeatTimeout))
		if id := e.awaitingApproval(); id != "" {
			cctx = metadata.AppendToOutgoingContext(cctx, api.MDAwaitingApproval, id)
		}
		if e.sharesLogs() {
			cctx = metadata.AppendToOutgoingContext(cctx, api.MDShareLogs, "true")
		}
		resp, err := e.dirc.UpdateEnvoyStatus(cctx, req, grpc.Header(&hdr))
		cancel()
		if ctx.Err() != nil {
			return nil
		}
		var wait time.Duration
		switch {
		case err == nil:
			e.prom.heartbeat(true)
			e.setRegistered(true)
			b.reset()
			if p := resp.GetHealthCheckPeriod(); p != nil && p.IsValid() && p.AsDuration() > 0 {
				if np := max(p.AsDuration(), minHealthCheckPeriod); np != period {
					e.log.Debug("health check period set by director", api.LogPeriod, np)
					period = np
					b = newBackoff(min(minBackoff, period), period)
				}
			}
			e.stopNamed(hdr.Get(api.MDStop))
			e.askedLogs(hdr.Get(api.MDSendLog))
			wait = period
		case status.Code(err) == codes.NotFound:
			e.prom.heartbeat(false)
			e.setRegistered(false)
			e.log.Info("director does not know this envoy; registering again")
			err := e.register(ctx)
			switch {
			case ctx.Err() != nil:
				return nil
			case err == nil:
				b.reset()
				continue // heartbeat at once, as after the first registration
			case errors.Is(err, ErrRefused):
				return err
			}
			wait = b.delay()
			e.log.Warn("registering again failed", api.LogErr, err, api.LogRetryIn, wait)
		default:
			e.prom.heartbeat(false)
			e.setRegistered(false)
			wait = b.delay()
			logRetry(e.log, "heartbeat failed", "UpdateEnvoyStatus", err, wait)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-e.poke:
			t.Stop()
		case <-t.C:
		}
	}
}

// running reports whether the envoy has taken an experiment that is not yet
// over: its training command may still run or its workspace still exist.
func (e *Envoy) running() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.cur != nil
}

// stopNamed cancels the running experiment if ids (fedplane-stop header
// values, each possibly a comma-separated list) name it.
func (e *Envoy) stopNamed(ids []string) {
	if len(ids) == 0 {
		return
	}
	var names []string
	for _, v := range ids {
		for id := range strings.SplitSeq(v, ",") {
			names = append(names, strings.TrimSpace(id))
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cur != nil && slices.Contains(names, e.cur.id) {
		e.log.Info("director says the experiment is over; stopping it", api.LogJob, e.cur.id)
		e.cur.cancel(errStopped)
	}
}
