package openfl

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/fedplane/fedplane/api/aggregatorpb"
	"github.com/fedplane/fedplane/api/basepb"
)

// chanStream is a results stream whose chunks come from a channel.
type chanStream struct {
	grpc.ServerStream
	ch chan *basepb.DataStream
}

func (s chanStream) Recv() (*basepb.DataStream, error) {
	m, ok := <-s.ch
	if !ok {
		return nil, io.EOF
	}
	return m, nil
}

func (s chanStream) SendAndClose(*aggregatorpb.SendLocalTaskResultsResponse) error { return nil }

// TestPacedRecv: a results stream that stalls or trickles is dropped, by
// the clock; a steady one is read to its end.
func TestPacedRecv(t *testing.T) {
	tests := []struct {
		name     string
		chunk    int
		every    time.Duration
		n        int
		wantSlow bool
	}{
		{name: "steady", chunk: 64 << 10, every: time.Millisecond, n: 200},
		{name: "trickle", chunk: 16, every: 10 * time.Millisecond, n: 1000, wantSlow: true},
		{name: "stall", chunk: 1, every: time.Hour, n: 2, wantSlow: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := chanStream{ch: make(chan *basepb.DataStream)}
			stop := make(chan struct{})
			defer close(stop)
			go func() {
				defer close(s.ch)
				for range tt.n {
					select {
					case s.ch <- &basepb.DataStream{Size: uint32(tt.chunk), Npbytes: make([]byte, tt.chunk)}:
					case <-stop:
						return
					}
					select {
					case <-time.After(tt.every):
					case <-stop:
						return
					}
				}
			}()
			p := newPacedRecv(s)
			p.idle, p.window, p.min = 300*time.Millisecond, 200*time.Millisecond, 64<<10
			defer p.stop()
			var err error
			for err == nil {
				_, err = p.recv()
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				// Past the end, the end again, at once.
				if _, again := p.recv(); again != err {
					t.Fatalf("after %v: %v", err, again)
				}
			}
			slow := errors.Is(err, context.DeadlineExceeded)
			if slow != tt.wantSlow || (!slow && !errors.Is(err, io.EOF)) {
				t.Fatalf("ended with %v; want too slow: %v", err, tt.wantSlow)
			}
		})
	}
}
