package web

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/director"
)

// eventPage bounds the events one wait of a stream reads.
const eventPage = 1000

// events streams the federation's events as Server-Sent Events: an "id:"
// line with each event's seq and its JSON as data. It starts after the
// seq that Last-Event-ID (a browser's reconnect) or ?after= gives, else
// after the newest event, and follows the director's long poll, with a
// comment line when nothing happened for a while. It ends when the
// director drains or the client goes.
func (s *Server) events(w http.ResponseWriter, r *http.Request, c director.Caller) error {
	after := s.d.LastEventSeq()
	for _, v := range []string{r.Header.Get("Last-Event-ID"), r.URL.Query().Get("after")} {
		if v == "" {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return fmt.Errorf("%w: event seq %q is not a non-negative number", api.ErrInvalid, v)
		}
		after = n
		break
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		return fmt.Errorf("event stream: the connection cannot flush")
	}
	release, err := s.enterStream(c)
	if err != nil {
		return err
	}
	defer release()

	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	// The browser reconnects this long after a stream ends (a drain).
	fmt.Fprint(w, "retry: 3000\n\n")
	flusher.Flush()
	ctx := r.Context()
	for {
		events, err := s.d.Events(ctx, after, "", eventPage, heartbeat)
		select {
		case <-s.d.Stopping():
			return nil
		default:
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil // the client went
			}
			s.log.WarnContext(ctx, "web console event stream ended", api.LogErr, err)
			return nil
		}
		if len(events) == 0 {
			fmt.Fprint(w, ": heartbeat\n\n")
		}
		for _, e := range events {
			b, err := json.Marshal(e)
			if err != nil {
				return nil
			}
			fmt.Fprintf(w, "id: %d\ndata: %s\n\n", e.Seq, b)
			after = e.Seq
		}
		flusher.Flush()
		if ctx.Err() != nil {
			return nil
		}
	}
}

// enterStream counts an event stream of c, unless the caps are reached.
func (s *Server) enterStream(c director.Caller) (release func(), err error) {
	key := c.Kind + ":" + c.Org + ":" + c.Name
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.streams >= s.cfg.MaxStreams:
		return nil, fmt.Errorf("%w: %d console event streams are open; try again later", api.ErrBusy, s.cfg.MaxStreams)
	case s.byCaller[key] >= s.cfg.MaxStreamsPerCaller:
		return nil, fmt.Errorf("%w: %s has %d console event streams open (tabs); close some", api.ErrBusy, c.Name, s.cfg.MaxStreamsPerCaller)
	}
	s.streams++
	s.byCaller[key]++
	return func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.streams--
		if s.byCaller[key]--; s.byCaller[key] <= 0 {
			delete(s.byCaller, key)
		}
	}, nil
}
