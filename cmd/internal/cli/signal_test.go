//go:build unix

package cli

import (
	"bytes"
	"context"
	"errors"
	"syscall"
	"testing"

	"github.com/spf13/cobra"
)

// TestMainSignals sends the test process a signal from inside a command
// that Main runs, which Main then holds, and checks the exit code.
func TestMainSignals(t *testing.T) {
	tests := []struct {
		name       string
		sig        syscall.Signal
		ret        func(ctx context.Context) error // what the command returns once ctx ends
		wantCode   int
		wantStderr string
	}{
		{name: "interrupt, cancelled", sig: syscall.SIGINT, ret: func(ctx context.Context) error { return ctx.Err() }, wantCode: ExitInterrupted},
		{name: "interrupt, cause wrapped", sig: syscall.SIGINT,
			ret:      func(ctx context.Context) error { return errors.Join(errors.New("read reply"), context.Cause(ctx)) },
			wantCode: ExitInterrupted},
		{name: "interrupt, clean stop", sig: syscall.SIGINT, ret: func(context.Context) error { return nil }, wantCode: ExitInterrupted},
		{name: "interrupt, other error", sig: syscall.SIGINT, ret: func(context.Context) error { return errors.New("close store: disk full") },
			wantCode: ExitInterrupted, wantStderr: "Error: close store: disk full\n"},
		{name: "terminate, clean stop", sig: syscall.SIGTERM, ret: func(context.Context) error { return nil }, wantCode: ExitOK},
		{name: "terminate, cancelled", sig: syscall.SIGTERM, ret: func(ctx context.Context) error { return context.Cause(ctx) },
			wantCode: ExitError, wantStderr: "Error: terminated signal received\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cause error
			root := &cobra.Command{
				Use: "prog",
				RunE: func(cmd *cobra.Command, _ []string) error {
					if err := syscall.Kill(syscall.Getpid(), tt.sig); err != nil {
						return err
					}
					<-cmd.Context().Done()
					cause = context.Cause(cmd.Context())
					return tt.ret(cmd.Context())
				},
			}
			var stderr bytes.Buffer
			code := Main(root, nil, &stderr)
			if code != tt.wantCode || stderr.String() != tt.wantStderr {
				t.Fatalf("got exit %d, stderr %q; want exit %d, stderr %q", code, stderr.String(), tt.wantCode, tt.wantStderr)
			}
			var se *SignalError
			if !errors.As(cause, &se) || se.Signal != tt.sig || !errors.Is(cause, context.Canceled) {
				t.Fatalf("context cause %v: want a SignalError for %v that is a context.Canceled", cause, tt.sig)
			}
		})
	}
}
