package openfl

import (
	"context"
	"fmt"
	"time"

	"github.com/fedplane/fedplane/api/aggregatorpb"
	"github.com/fedplane/fedplane/api/basepb"
)

// Task results arrive as a stream that holds a reservation of the
// director's temp space (and the envoy's one upload) for as long as it
// lasts. A stream that stalls, or trickles, would hold them for ever: the
// connection's keepalives keep it up. So a results stream is dropped when
// no chunk comes for resultsIdle, or when, over a window of
// resultsRateWindow, fewer than resultsMinRate bytes a second arrive.
const (
	resultsIdle       = 2 * time.Minute
	resultsRateWindow = time.Minute
	resultsMinRate    = 16 << 10
)

// pacedRecv receives a client stream's messages (task results' chunks, a
// training log's) on a goroutine of its own, so that a wait for the next
// one can end by the clock.
type pacedRecv[M any] struct {
	recvMsg func() (M, error)
	size    func(M) int
	what    string // what arrives, for errors: "task results"
	idle    time.Duration
	window  time.Duration
	min     int64

	ch      chan received[M]
	done    chan struct{}
	started bool
	end     error     // the stream's last error (io.EOF at its end), once seen
	since   time.Time // start of the rate window
	got     int64     // bytes in the rate window
}

type received[M any] struct {
	msg M
	err error
}

func newPacedRecv(stream aggregatorpb.Aggregator_SendLocalTaskResultsServer) *pacedRecv[*basepb.DataStream] {
	return newPaced(stream.Recv, func(m *basepb.DataStream) int { return len(m.GetNpbytes()) }, "task results")
}

// newPaced paces the messages recv returns, of which size counts the
// bytes, with the results' limits.
func newPaced[M any](recv func() (M, error), size func(M) int, what string) *pacedRecv[M] {
	return &pacedRecv[M]{recvMsg: recv, size: size, what: what, idle: resultsIdle, window: resultsRateWindow, min: resultsMinRate,
		ch: make(chan received[M]), done: make(chan struct{})}
}

// recv returns the stream's next message, or an error once the stream
// stalled or trickled.
func (p *pacedRecv[M]) recv() (M, error) {
	var zero M
	if p.end != nil {
		return zero, p.end // the pump has stopped
	}
	if !p.started {
		p.started, p.since = true, time.Now()
		go p.pump()
	}
	t := time.NewTimer(p.idle)
	defer t.Stop()
	select {
	case r := <-p.ch:
		if r.err != nil {
			p.end = r.err
			return zero, r.err
		}
		p.got += int64(p.size(r.msg))
		if d := time.Since(p.since); d >= p.window {
			if need := int64(float64(p.min) * d.Seconds()); p.got < need {
				p.end = fmt.Errorf("%w: %s arrive too slowly: %d bytes in %v, at least %d bytes/s wanted", context.DeadlineExceeded, p.what, p.got, d.Round(time.Second), p.min)
				return zero, p.end
			}
			p.since, p.got = time.Now(), 0
		}
		return r.msg, nil
	case <-t.C:
		p.end = fmt.Errorf("%w: no %s chunk for %v", context.DeadlineExceeded, p.what, p.idle)
		return zero, p.end
	}
}

// pump receives until the stream ends or the reader stops.
func (p *pacedRecv[M]) pump() {
	for {
		m, err := p.recvMsg()
		select {
		case p.ch <- received[M]{m, err}:
		case <-p.done:
			return
		}
		if err != nil {
			return
		}
	}
}

// stop lets the pump go: the handler is done with the stream, which gRPC
// ends once the handler returns, and with it a Recv still waiting.
func (p *pacedRecv[M]) stop() { close(p.done) }
