//go:build unix

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fedplane/fedplane/cmd/internal/cli"
	"github.com/fedplane/fedplane/cmd/internal/proctest"
)

// TestSecondDirectorOnADataDir: while a director serves on a data dir, a
// second director on it exits at once with status 1, naming the first's
// PID; once the first stopped, the data dir is free again.
func TestSecondDirectorOnADataDir(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	args := []string{"serve", "--data-dir", data, "--grpc-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"}
	var logs proctest.Log
	root := newRootCmd()
	root.SetErr(&logs)
	done := make(chan int, 1)
	go func() { done <- cli.Main(root, args, &logs) }()
	logs.WaitRecord(t, proctest.StartTimeout, "director serving")

	code, _, stderr := runDirector(t, args...)
	want := fmt.Sprintf("data dir %s is in use by another director (pid %d)", data, os.Getpid())
	if code != cli.ExitError || !strings.Contains(stderr, want) {
		t.Fatalf("second director: exit %d, stderr %q; want exit %d and %q", code, stderr, cli.ExitError, want)
	}

	if err := syscall.Kill(syscall.Getpid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	proctest.WaitCode(t, done, cli.ExitOK, 30*time.Second, &logs)
	unlock, err := lockDataDir(data)
	if err != nil {
		t.Fatalf("after the first director stopped: %v", err)
	}
	unlock()
}
