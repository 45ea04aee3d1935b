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
			admin := freeAddr(t)
			var logs proctest.Log
			root := newRootCmd()
			root.SetErr(&logs)
			done := make(chan int, 1)
			go func() {
				done <- cli.Main(root, []string{"serve", "--data-dir", filepath.Join(t.TempDir(), "data"),
					"--grpc-listen", freeAddr(t), "--admin-listen", admin, "--log-level", "warn"}, &logs)
			}()
			// Main holds the signal once the director serves.
			deadline := time.Now().Add(20 * time.Second)
			for {
				c, err := net.Dial("tcp", admin)
				if err == nil {
					c.Close()
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("director did not serve: %v\n%s", err, logs.String())
				}
				time.Sleep(20 * time.Millisecond)
			}
			if err := syscall.Kill(syscall.Getpid(), tt.sig); err != nil {
				t.Fatal(err)
			}
			select {
			case code := <-done:
				if code != tt.wantCode {
					t.Fatalf("exit %d, want %d\n%s", code, tt.wantCode, logs.String())
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("director did not stop on %v", tt.sig)
			}
		})
	}
}
