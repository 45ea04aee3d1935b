package envoy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/logspb"
)

// Shared training logs: when the site shares them (its policy's
// share_logs, or Config.ShareLogs without a policy), the envoy sends the
// tail of an experiment's training log to the director after each
// training run, at the experiment's end, and whenever a heartbeat reply
// asks for it (an admin ran fladmin logs). What it sends is the log's
// last api.MaxSharedLog bytes with the site's paths redacted as in
// failure reports. Uploads run on a goroutine of their own, so a slow
// link delays neither heartbeats nor training.

// sendLogTimeout bounds one upload of a log.
const sendLogTimeout = 5 * time.Minute

// logShipper holds the experiments whose logs are to be sent.
type logShipper struct {
	mu      sync.Mutex
	pending []string
	wake    chan struct{}
}

// sharesLogs reports whether the site shares training logs: its policy
// says so when it has one, Config.ShareLogs otherwise.
func (e *Envoy) sharesLogs() bool {
	if e.cfg.Policy != nil {
		return e.cfg.Policy.ShareLogs
	}
	return e.cfg.ShareLogs
}

// queueLog has experiment id's log sent, once, soon; nothing when the
// site does not share logs.
func (e *Envoy) queueLog(id string) {
	if !e.sharesLogs() {
		return
	}
	s := &e.logs
	s.mu.Lock()
	if !slices.Contains(s.pending, id) {
		s.pending = append(s.pending, id)
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// askedLogs queues the logs a heartbeat reply asks for (fedplane-send-log
// values, each a comma-separated list of experiment ids), of experiments
// this envoy has a folder for.
func (e *Envoy) askedLogs(values []string) {
	for _, v := range values {
		for id := range strings.SplitSeq(v, ",") {
			id = strings.TrimSpace(id)
			if checkName(id) != nil || id == approvalsDirName {
				continue
			}
			e.queueLog(id)
		}
	}
}

// shipLogs sends queued logs until ctx ends.
func (e *Envoy) shipLogs(ctx context.Context) {
	s := &e.logs
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
		}
		s.mu.Lock()
		ids := s.pending
		s.pending = nil
		s.mu.Unlock()
		for _, id := range ids {
			err := e.sendLog(ctx, id)
			switch {
			case ctx.Err() != nil:
				return
			case errors.Is(err, fs.ErrNotExist):
				e.log.Debug("no training log to send", api.LogJob, id)
			case err != nil:
				e.log.Warn("sending the training log failed", api.LogJob, id, api.LogErr, err)
			}
		}
	}
}

// sendLog sends the tail of experiment id's training log, redacted.
func (e *Envoy) sendLog(ctx context.Context, id string) error {
	dir := filepath.Join(e.cfg.WorkDir, id)
	data, truncated, err := readLogTail(filepath.Join(dir, logsDirName, trainLogName), api.MaxSharedLog)
	if err != nil {
		return err
	}
	data = []byte(newRedactor(&e.cfg, dir).redact(string(data)))
	// A placeholder may be longer than the path it stands for.
	if len(data) > api.MaxSharedLog {
		data = data[len(data)-api.MaxSharedLog:]
		truncated = true
	}
	ctx, cancel := context.WithTimeout(ctx, sendLogTimeout)
	defer cancel()
	stream, err := e.logc.SendTrainingLog(ctx)
	if err != nil {
		return err
	}
	msg := &logspb.TrainingLogChunk{Header: &logspb.TrainingLogHeader{
		EnvoyName: e.cfg.Name, ExperimentName: id, Size: int64(len(data)), Truncated: truncated,
	}}
	for off := 0; ; {
		end := min(off+api.LogChunk, len(data))
		msg.Data = data[off:end]
		if err := stream.Send(msg); err != nil {
			// io.EOF: the director ended the stream; its status comes
			// with the reply.
			break
		}
		e.prom.sentBytes(BytesLogs, int64(end-off))
		if off = end; off == len(data) {
			break
		}
		msg = &logspb.TrainingLogChunk{}
	}
	if _, err := stream.CloseAndRecv(); err != nil {
		return fmt.Errorf("SendTrainingLog: %w", err)
	}
	e.log.Debug("training log sent", api.LogJob, id, api.LogBytes, len(data))
	return nil
}
