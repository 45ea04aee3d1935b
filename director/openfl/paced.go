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

// pacedRecv receives a results stream's chunks on a goroutine of its own,
// so that a wait for the next one can end by the clock.
type pacedRecv struct {
	stream aggregatorpb.Aggregator_SendLocalTaskResultsServer
	idle   time.Duration
	window time.Duration
	min    int64

	ch      chan received
	done    chan struct{}
	started bool
	end     error     // the stream's last error (io.EOF at its end), once seen
	since   time.Time // start of the rate window
	got     int64     // bytes in the rate window
}

type received struct {
	msg *basepb.DataStream
	err error
}

func newPacedRecv(stream aggregatorpb.Aggregator_SendLocalTaskResultsServer) *pacedRecv {
	return &pacedRecv{stream: stream, idle: resultsIdle, window: resultsRateWindow, min: resultsMinRate,
		ch: make(chan received), done: make(chan struct{})}
}

// recv returns the stream's next chunk, or an error once the stream
// stalled or trickled.
func (p *pacedRecv) recv() (*basepb.DataStream, error) {
	if p.end != nil {
		return nil, p.end // the pump has stopped
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
			return nil, r.err
		}
		p.got += int64(len(r.msg.GetNpbytes()))
		if d := time.Since(p.since); d >= p.window {
			if need := int64(float64(p.min) * d.Seconds()); p.got < need {
				p.end = fmt.Errorf("%w: task results arrive too slowly: %d bytes in %v, at least %d bytes/s wanted", context.DeadlineExceeded, p.got, d.Round(time.Second), p.min)
				return nil, p.end
			}
			p.since, p.got = time.Now(), 0
		}
		return r.msg, nil
	case <-t.C:
		p.end = fmt.Errorf("%w: no task results chunk for %v", context.DeadlineExceeded, p.idle)
		return nil, p.end
	}
}

// pump receives until the stream ends or the reader stops.
func (p *pacedRecv) pump() {
	for {
		m, err := p.stream.Recv()
		select {
		case p.ch <- received{m, err}:
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
func (p *pacedRecv) stop() { close(p.done) }
