//go:build unix

package main

import (
	"net"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/fedplane/fedplane/cmd/internal/cli"
	"github.com/fedplane/fedplane/cmd/internal/proctest"
)

// deadAddr is a loopback address nobody listens on.
func deadAddr(tb testing.TB) string {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

// TestStartSignals runs `envoy start` against a director that is not
// there (it retries until stopped) and stops it with a signal.
func TestStartSignals(t *testing.T) {
	tests := []struct {
		name     string
		sig      syscall.Signal
		wantCode int
	}{
		{"SIGINT", syscall.SIGINT, cli.ExitInterrupted},
		{"SIGTERM", syscall.SIGTERM, cli.ExitOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs proctest.Log
			root := newRootCmd()
			root.SetErr(&logs)
			done := make(chan int, 1)
			go func() {
				done <- cli.Main(root, []string{"start", "--name", "site-1", "--director", deadAddr(t),
					"--shard-dir", t.TempDir(), "--work-dir", filepath.Join(t.TempDir(), "work"), "--samples", "1", "--allow-root"}, &logs)
			}()
			// Main holds the signal once the envoy has started.
			logs.WaitRecord(t, 10*time.Second, "director unreachable; retrying")
			if err := syscall.Kill(syscall.Getpid(), tt.sig); err != nil {
				t.Fatal(err)
			}
			proctest.WaitCode(t, done, tt.wantCode, 10*time.Second, &logs)
		})
	}
}
