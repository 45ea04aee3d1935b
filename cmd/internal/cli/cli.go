// Package cli holds what fedplane's three programs share on the command line:
// the version stamp, exit codes and signals, checks of flag values, the slog
// handler built from --log-format and --log-level, the --tls-* flags, and
// loading a YAML config file whose keys are the flag names.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// Version is the build's version, stamped by the Makefile with -ldflags -X.
var Version = "dev"

// Exit codes shared by the programs.
const (
	ExitOK    = 0
	ExitError = 1
	// ExitUsage is a misuse of the command line: an unknown command or
	// flag, a missing or extra argument, or a value a flag refuses.
	ExitUsage = 2
	// ExitInterrupted is the status of a program stopped by SIGINT (^C):
	// 128 + 2, as a shell reports a program the signal killed.
	ExitInterrupted = 130
)

// SignalError is the cause (context.Cause) of the context Main runs a
// command with, once SIGINT or SIGTERM has arrived. It is a
// context.Canceled.
type SignalError struct{ Signal os.Signal }

func (e *SignalError) Error() string { return e.Signal.String() + " signal received" }

// Is makes a SignalError a context.Canceled, as the context's Err is.
func (e *SignalError) Is(target error) bool { return target == context.Canceled }

// UsageError marks an error as a misuse of the command line (exit 2).
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Usagef returns a UsageError with a formatted message.
func Usagef(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// Main runs root with a context cancelled by SIGINT or SIGTERM (its cause a
// *SignalError), prints an error once as "Error: ..." to stderr, and returns
// the exit code: ExitOK, ExitError, ExitUsage for a UsageError or one of
// cobra's, and ExitInterrupted after SIGINT whatever the command returned,
// printing its error only if it is not the cancellation. After SIGTERM the
// command's error decides, so a server that stops cleanly exits 0. Once a
// signal has arrived, a second one ends the program at once, as if Main
// had not caught the first: a stop that hangs can still be interrupted.
func Main(root *cobra.Command, args []string, stderr io.Writer) int {
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		select {
		case s := <-sigs:
			signal.Stop(sigs)
			cancel(&SignalError{Signal: s})
		case <-ctx.Done():
		}
	}()
	root.SilenceErrors = true
	root.SilenceUsage = true
	root.SetArgs(args)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &UsageError{Err: err} })
	wrapArgs(root)
	err := root.ExecuteContext(ctx)
	var sig *SignalError
	if errors.As(context.Cause(ctx), &sig) && sig.Signal == os.Interrupt {
		if err != nil && !errors.Is(err, context.Canceled) {
			fmt.Fprintf(stderr, "Error: %v\n", err)
		}
		return ExitInterrupted
	}
	if err == nil {
		return ExitOK
	}
	fmt.Fprintf(stderr, "Error: %v\n", err)
	var ue *UsageError
	if errors.As(err, &ue) || isCobraUsage(err) {
		fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", root.Name())
		return ExitUsage
	}
	return ExitError
}

// wrapArgs makes positional-argument errors of every command usage errors.
func wrapArgs(c *cobra.Command) {
	if c.Args != nil {
		check := c.Args
		c.Args = func(cmd *cobra.Command, args []string) error {
			if err := check(cmd, args); err != nil {
				return &UsageError{Err: err}
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		wrapArgs(sub)
	}
}

// isCobraUsage recognises cobra's own unknown-command error, which it returns
// as a plain error.
func isCobraUsage(err error) bool {
	return strings.HasPrefix(err.Error(), "unknown command ")
}

// NewLogger builds the process's one slog handler.
func NewLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, Usagef("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, Usagef("--log-format %q: want text or json", format)
	}
}

// AddLogFlags adds --log-format and --log-level to fs-bound variables.
func AddLogFlags(c *cobra.Command, format, level *string) {
	c.Flags().StringVar(format, "log-format", "text", "log format: text or json")
	c.Flags().StringVar(level, "log-level", "info", "log level: debug, info, warn or error")
}

// TrimAll trims the spaces around each element of a list flag ("28, 28").
func TrimAll(s []string) []string {
	out := make([]string, 0, len(s))
	for _, x := range s {
		out = append(out, strings.TrimSpace(x))
	}
	return out
}
