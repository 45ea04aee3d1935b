//go:build unix

package main

import (
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/fedplane/fedplane/cmd/internal/cli"
)

// TestInterrupt stops fladmin with SIGINT while it waits for a director
// that never replies: it exits 130 and prints no error.
func TestInterrupt(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		if c, err := lis.Accept(); err == nil {
			accepted <- c
		}
	}()
	type result struct {
		stderr string
		code   int
	}
	done := make(chan result, 1)
	go func() {
		_, stderr, code := runFladminTTY(t, lis.Addr().String(), false, "status")
		done <- result{stderr, code}
	}()
	// fladmin has connected: Main holds SIGINT.
	select {
	case c := <-accepted:
		defer c.Close()
	case <-time.After(10 * time.Second):
		t.Fatal("fladmin did not connect")
	}
	if err := syscall.Kill(syscall.Getpid(), syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		if r.code != cli.ExitInterrupted || r.stderr != "" {
			t.Fatalf("exit %d, stderr %q; want 130 and nothing", r.code, r.stderr)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("fladmin did not stop on SIGINT")
	}
}
