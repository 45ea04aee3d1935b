//go:build unix

package main

import (
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/fedplane/fedplane/cmd/internal/cli"
	"github.com/fedplane/fedplane/cmd/internal/proctest"
)

// TestServeSignals runs `director serve` and stops it with a signal: SIGINT
// exits 130, SIGTERM, after the same clean stop, 0.
func TestServeSignals(t *testing.T) {
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
				done <- cli.Main(root, []string{"serve", "--data-dir", filepath.Join(t.TempDir(), "data"),
					"--grpc-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"}, &logs)
			}()
			// Main holds the signal once the director serves.
			logs.WaitRecord(t, proctest.StartTimeout, "director serving")
			if err := syscall.Kill(syscall.Getpid(), tt.sig); err != nil {
				t.Fatal(err)
			}
			proctest.WaitCode(t, done, tt.wantCode, 30*time.Second, &logs)
		})
	}
}
