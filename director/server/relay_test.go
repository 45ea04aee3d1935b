package server

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"
)

// echoServer answers each line with prefix and the line, until closed.
func echoServer(t *testing.T, prefix string) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					io.WriteString(c, prefix+line)
				}
			}()
		}
	}()
	return lis
}

func roundTrip(t *testing.T, addr, line string) (string, error) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "", err
	}
	got, err := bufio.NewReader(c).ReadString('\n')
	return got, err
}

// TestSwitch: a standby's port relays to whichever coordinator target
// names at each connection, drops a connection while none is known, and
// once Serve is called hands connections to the local server instead.
func TestSwitch(t *testing.T) {
	a, b := echoServer(t, "a:"), echoServer(t, "b:")
	var target atomic.Value
	target.Store("")
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sw := NewSwitch(lis, "grpc", func() string { return target.Load().(string) }, 0, slog.New(slog.DiscardHandler))
	sw.patience = 2 * time.Second
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sw.Run(ctx) }()
	addr := sw.Addr().String()

	if got, err := roundTrip(t, addr, "x"); err == nil {
		t.Fatalf("no coordinator for longer than the patience: got %q, want the connection closed", got)
	}
	// A connection made while no coordinator answers waits for one.
	go func() {
		time.Sleep(200 * time.Millisecond)
		target.Store(b.Addr().String())
	}()
	if got, err := roundTrip(t, addr, "early"); err != nil || got != "b:early\n" {
		t.Fatalf("relay to a coordinator that came late: got %q, %v", got, err)
	}
	for _, tc := range []struct {
		target net.Listener
		want   string
	}{{a, "a:one\n"}, {b, "b:one\n"}, {a, "a:one\n"}} {
		target.Store(tc.target.Addr().String())
		if got, err := roundTrip(t, addr, "one"); err != nil || got != tc.want {
			t.Fatalf("relay to %s: got %q, %v; want %q", tc.target.Addr(), got, err, tc.want)
		}
	}

	local := sw.Serve()
	go func() {
		c, err := local.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		line, _ := bufio.NewReader(c).ReadString('\n')
		io.WriteString(c, "local:"+line)
	}()
	if got, err := roundTrip(t, addr, "two"); err != nil || got != "local:two\n" {
		t.Fatalf("after Serve: got %q, %v; want it served locally", got, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if _, err := local.Accept(); err == nil {
		t.Fatal("local listener still accepts after Run ended")
	}
}
