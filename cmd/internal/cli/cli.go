// Package cli holds what fedplane's three programs share on the command line:
// the version stamp, exit codes, the slog handler built from --log-format and
// --log-level, and loading a YAML config file whose keys are the flag names.
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
	ExitUsage = 2
)

// UsageError marks an error as a misuse of the command line (exit 2).
type UsageError struct{ Err error }

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Usagef returns a UsageError with a formatted message.
func Usagef(format string, args ...any) error {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// Main runs root with a context cancelled by SIGINT or SIGTERM, prints an
// error once as "Error: ..." to stderr, and returns the exit code.
func Main(root *cobra.Command, args []string, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root.SilenceErrors = true
	root.SilenceUsage = true
	root.SetArgs(args)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &UsageError{Err: err} })
	wrapArgs(root)
	err := root.ExecuteContext(ctx)
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
