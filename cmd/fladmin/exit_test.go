package main

import (
	"strings"
	"testing"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/cmd/internal/cli"
)

// TestExitCodes runs fladmin's cobra root through cli.Main and checks the
// exit code and the error of each kind of failure.
func TestExitCodes(t *testing.T) {
	srv := startFakeAdmin(t, ok(map[string]any{"job": sampleJob, "version": "v1", "jobs": []any{}}))
	refusing := startFakeAdmin(t, &adminproto.Message{Meta: map[string]any{"status": "invalid_job_id", "info": "no job"}})
	tests := []struct {
		name     string
		addr     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"ok", srv.addr, []string{"show-job", "0b5a6a7e"}, cli.ExitOK, ""},
		{"help", srv.addr, []string{"metrics", "--help"}, cli.ExitOK, ""},
		{"refused", refusing.addr, []string{"show-job", "0b5a6a7e"}, cli.ExitError, "director refused (invalid_job_id): no job"},
		{"unreachable", "127.0.0.1:1", []string{"status"}, cli.ExitError, "127.0.0.1:1"},
		{"unknown command", srv.addr, []string{"frobnicate"}, cli.ExitUsage, `unknown command "frobnicate"`},
		{"unknown flag", srv.addr, []string{"list-jobs", "--nmae", "x"}, cli.ExitUsage, "unknown flag: --nmae"},
		{"missing argument", srv.addr, []string{"show-job"}, cli.ExitUsage, "accepts 1 arg"},
		{"extra argument", srv.addr, []string{"status", "now"}, cli.ExitUsage, `unknown command "now"`},
		{"bad output", srv.addr, []string{"-o", "xml", "status"}, cli.ExitUsage, `--output "xml": want table, json or yaml`},
		{"bad timeout value", srv.addr, []string{"--timeout", "soon", "status"}, cli.ExitUsage, `invalid argument "soon" for "--timeout"`},
		{"zero timeout", srv.addr, []string{"--timeout", "0s", "status"}, cli.ExitUsage, "--timeout 0s: must be positive"},
		{"address without port", "localhost", []string{"status"}, cli.ExitUsage, `--addr "localhost": want HOST:PORT`},
		{"address with a bad port", "localhost:admin", []string{"status"}, cli.ExitUsage, `port "admin" is not a number`},
		{"empty address", "", []string{"status"}, cli.ExitUsage, "--addr is empty"},
		{"empty address in the list", "127.0.0.1:1,,127.0.0.1:2", []string{"status"}, cli.ExitUsage, `--addr "127.0.0.1:1,,127.0.0.1:2": address 2 of 3 is empty`},
		{"address given twice", "127.0.0.1:1,127.0.0.1:2,127.0.0.1:1", []string{"status"}, cli.ExitUsage, "127.0.0.1:1 is given twice (addresses 1 and 3)"},
		{"bad address in the list", "127.0.0.1:1,localhost", []string{"status"}, cli.ExitUsage, `--addr "localhost": want HOST:PORT`},
		{"all unreachable", "127.0.0.1:1,127.0.0.1:2", []string{"status"}, cli.ExitError, "connect to director admin port: 127.0.0.1:1: connection refused; 127.0.0.1:2: connection refused"},
		{"short job id", srv.addr, []string{"show-job", "0b5a"}, cli.ExitUsage, `JOB_ID "0b5a" is too short`},
		{"job id of two words", srv.addr, []string{"abort-job", "0b5a6a7e list_jobs"}, cli.ExitUsage, "an id is one word"},
		{"negative max", srv.addr, []string{"list-jobs", "-m", "-1"}, cli.ExitUsage, "--max -1"},
		{"bad max value", srv.addr, []string{"list-jobs", "-m", "ten"}, cli.ExitUsage, `invalid argument "ten" for "-m, --max"`},
		{"name with a space", srv.addr, []string{"list-jobs", "-n", "a b"}, cli.ExitUsage, "--name"},
		{"zero interval", srv.addr, []string{"metrics", "0b5a6a7e", "--interval", "0s"}, cli.ExitUsage, "--interval 0s: must be positive"},
		{"negative wait timeout", srv.addr, []string{"wait-job", "0b5a6a7e", "--wait-timeout", "-1s"}, cli.ExitUsage, "--wait-timeout -1s"},
		{"half the tls flags", srv.addr, []string{"--tls-ca", "ca.crt", "status"}, cli.ExitUsage, "go together"},
		{"missing job folder", srv.addr, []string{"submit-job", "/nonexistent/job"}, cli.ExitError, "/nonexistent/job"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, stderr, code := runFladminTTY(t, tt.addr, false, tt.args...)
			if code != tt.wantCode || !strings.Contains(stderr, tt.wantErr) {
				t.Fatalf("exit %d, stderr %q; want exit %d and %q", code, stderr, tt.wantCode, tt.wantErr)
			}
			if n := strings.Count(stderr, "Error:"); n > 1 {
				t.Fatalf("error printed %d times: %q", n, stderr)
			}
		})
	}
}

// TestWaitJobTimeout checks that --wait-timeout, not the global --timeout,
// bounds the wait, and that the error says which.
func TestWaitJobTimeout(t *testing.T) {
	srv := startFakeAdmin(t, ok(map[string]any{"job": sampleJob, "events": []any{}, "last_seq": 0})) // pending forever
	_, stderr, code := runFladminTTY(t, srv.addr, false, "wait-job", "0b5a6a7e", "--wait-timeout", "300ms", "--interval", "50ms")
	if code != cli.ExitError || !strings.Contains(stderr, "after 300ms (--wait-timeout)") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}
