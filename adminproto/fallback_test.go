package adminproto

import (
	"bufio"
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// deadAddr returns a loopback address where nothing listens: a port the
// kernel handed out and that was closed again.
func deadAddr(tb testing.TB) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// countingServer answers every request with a reply of status and counts
// the requests it read.
func countingServer(tb testing.TB, status string, n *atomic.Int32) string {
	return startServer(tb, func(conn net.Conn, _ <-chan struct{}) {
		readRequest(tb, bufio.NewReader(conn))
		n.Add(1)
		WriteMessage(conn, reply(status, "from "+status))
	})
}

// TestClientFallback gives a Client a first address that fails in each way
// there is, and a second that serves: a connection that cannot be made
// moves on to the second; anything once connected does not.
func TestClientFallback(t *testing.T) {
	var firstGot atomic.Int32
	refusing := countingServer(t, StatusError, &firstGot)
	hangingUp := startServer(t, func(conn net.Conn, _ <-chan struct{}) {
		readRequest(t, bufio.NewReader(conn))
		firstGot.Add(1)
	})
	// A port that takes no connection in time: the dial waits out its
	// timeout, as one to a host that drops the packets does.
	silent := deadAddr(t)
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr == silent {
			<-ctx.Done()
			return nil, &net.OpError{Op: "dial", Net: network, Err: ctx.Err()}
		}
		return new(net.Dialer).DialContext(ctx, network, addr)
	}
	tests := []struct {
		name      string
		first     string
		wantFirst int32  // requests the first address read
		wantInfo  string // of the reply; "" for an error
		wantErr   string
	}{
		{name: "refused connection", first: deadAddr(t), wantInfo: "from ok"},
		{name: "no connection in time", first: silent, wantInfo: "from ok"},
		{name: "a refusal is final", first: refusing, wantFirst: 1, wantInfo: "from error"},
		{name: "hanging up once connected is final", first: hangingUp, wantFirst: 1, wantErr: "director closed the connection without replying"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			firstGot.Store(0)
			var secondGot atomic.Int32
			second := countingServer(t, StatusOK, &secondGot)
			c := &Client{Addr: tt.first, Fallback: []string{second}, Dial: dial, Timeout: 200 * time.Millisecond}
			got, err := c.Do(context.Background(), NewRequest("check_status"))
			switch {
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("got %v, want an error with %q", err, tt.wantErr)
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Do: %v", err)
			case tt.wantErr == "" && got.Info() != tt.wantInfo:
				t.Fatalf("reply %q, want %q", got.Info(), tt.wantInfo)
			}
			wantSecond := int32(0)
			if tt.wantFirst == 0 {
				wantSecond = 1
			}
			if firstGot.Load() != tt.wantFirst || secondGot.Load() != wantSecond {
				t.Fatalf("requests read: %d by the first, %d by the second; want %d and %d", firstGot.Load(), secondGot.Load(), tt.wantFirst, wantSecond)
			}
		})
	}
}

// TestClientFallbackAllFail names every address and its failure.
func TestClientFallbackAllFail(t *testing.T) {
	a, b := deadAddr(t), deadAddr(t)
	c := &Client{Addr: a, Fallback: []string{b}}
	_, err := c.Do(context.Background(), NewRequest("check_status"))
	want := "connect to director admin port: " + a + ": connection refused; " + b + ": connection refused"
	if err == nil || err.Error() != want {
		t.Fatalf("got %v, want %q", err, want)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("errors.Is(%v, ECONNREFUSED) = false", err)
	}
}
