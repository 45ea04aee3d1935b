package cli

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spf13/cobra"
)

// testRoot is a program with one subcommand, run, that returns what the
// test says.
func testRoot(runErr error) *cobra.Command {
	root := &cobra.Command{Use: "prog"}
	var n int
	var d time.Duration
	run := &cobra.Command{
		Use:  "run",
		Args: cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error { return runErr },
	}
	run.Flags().IntVar(&n, "n", 0, "a number")
	run.Flags().DurationVar(&d, "d", 0, "a duration")
	root.AddCommand(run)
	return root
}

func TestMainExitCodes(t *testing.T) {
	tests := []struct {
		name       string
		runErr     error
		args       []string
		wantCode   int
		wantStderr string
	}{
		{name: "ok", args: []string{"run"}, wantCode: ExitOK},
		{name: "error", runErr: errors.New("boom"), args: []string{"run"}, wantCode: ExitError, wantStderr: "Error: boom\n"},
		{name: "usage error", runErr: Usagef("--n 3: too many"), args: []string{"run"}, wantCode: ExitUsage,
			wantStderr: "Error: --n 3: too many\nRun 'prog --help' for usage.\n"},
		{name: "wrapped usage error", runErr: errors.Join(errors.New("x"), Usagef("bad")), args: []string{"run"}, wantCode: ExitUsage},
		{name: "unknown flag", args: []string{"run", "--m", "1"}, wantCode: ExitUsage, wantStderr: "unknown flag: --m"},
		{name: "bad int value", args: []string{"run", "--n", "many"}, wantCode: ExitUsage, wantStderr: `invalid argument "many" for "--n"`},
		{name: "bad duration value", args: []string{"run", "--d", "soon"}, wantCode: ExitUsage, wantStderr: `invalid argument "soon" for "--d"`},
		{name: "extra argument", args: []string{"run", "x"}, wantCode: ExitUsage, wantStderr: `unknown command "x"`},
		{name: "unknown command", args: []string{"walk"}, wantCode: ExitUsage, wantStderr: `unknown command "walk"`},
		{name: "help", args: []string{"run", "--help"}, wantCode: ExitOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			root := testRoot(tt.runErr)
			root.SetOut(&bytes.Buffer{})
			code := Main(root, tt.args, &stderr)
			if code != tt.wantCode || !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Fatalf("got exit %d, stderr %q; want exit %d, stderr with %q", code, stderr.String(), tt.wantCode, tt.wantStderr)
			}
			if n := strings.Count(stderr.String(), "Error:"); n > 1 {
				t.Fatalf("error printed %d times: %q", n, stderr.String())
			}
		})
	}
}
