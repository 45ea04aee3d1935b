package envoy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// shCommand is a command running script with sh in a temp folder; the
// script may write its process group id with `echo $$ > pgid`.
func shCommand(tb testing.TB, script string, timeout time.Duration) *command {
	tb.Helper()
	dir := tb.TempDir()
	return &command{
		Argv:    []string{"sh", "-c", script},
		Dir:     dir,
		Env:     append(os.Environ(), "FEDPLANE_TEST=yes"),
		LogPath: filepath.Join(dir, "run.log"),
		Timeout: timeout,
		Grace:   300 * time.Millisecond,
	}
}

// readPgid reads the process group id the script wrote.
func readPgid(tb testing.TB, c *command) int {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(c.Dir, "pgid"))
	if err != nil {
		tb.Fatal(err)
	}
	pgid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		tb.Fatal(err)
	}
	return pgid
}

// checkGroupGone fails the test if any process of group pgid is left.
func checkGroupGone(tb testing.TB, pgid int) {
	tb.Helper()
	if err := syscall.Kill(-pgid, 0); !errors.Is(err, syscall.ESRCH) {
		tb.Errorf("process group %d: kill(-pgid, 0) = %v, want ESRCH: processes are left", pgid, err)
	}
}

func TestRunSuccess(t *testing.T) {
	c := shCommand(t, `echo $$ > pgid; pwd; echo "env $FEDPLANE_TEST"; echo to-stderr >&2`, time.Minute)
	tail, err := c.run(context.Background())
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if got, want := string(tail), "to-stderr\n"; got != want {
		t.Errorf("tail = %q, want %q", got, want)
	}
	log, err := os.ReadFile(c.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{c.Dir + "\n", "env yes\n", "to-stderr\n"} {
		if !bytes.Contains(log, []byte(want)) {
			t.Errorf("log %q lacks %q", log, want)
		}
	}
	checkGroupGone(t, readPgid(t, c))
}

func TestRunKillsLeftovers(t *testing.T) {
	// The leader exits at once, leaving a child that holds stderr.
	c := shCommand(t, `echo $$ > pgid; sleep 100 & echo started >&2`, time.Minute)
	start := time.Now()
	tail, err := c.run(context.Background())
	if err != nil {
		t.Fatalf("run: %v", err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("run took %v: it waited for the leftover child", took)
	}
	if string(tail) != "started\n" {
		t.Errorf("tail = %q, want %q", tail, "started\n")
	}
	checkGroupGone(t, readPgid(t, c))
}

func TestRunExitStatus(t *testing.T) {
	// Numbered stderr lines, 2000 of them: far more than the tail keeps.
	c := shCommand(t, `i=0; while [ $i -lt 2000 ]; do echo "line $i" >&2; i=$((i+1)); done; exit 3`, time.Minute)
	tail, runErr := c.run(context.Background())
	var ee *exitError
	if !errors.As(runErr, &ee) || ee.status != 3 || ee.code() != 3 {
		t.Fatalf("got %v, want exit status 3", runErr)
	}
	var all strings.Builder
	for i := range 2000 {
		fmt.Fprintf(&all, "line %d\n", i)
	}
	want := all.String()[all.Len()-tailSize:]
	if string(tail) != want {
		t.Errorf("tail is %d bytes %q..., want the last %d bytes of stderr %q...", len(tail), tail[:min(40, len(tail))], tailSize, want[:40])
	}
	log, err := os.ReadFile(c.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	if string(log) != all.String() {
		t.Errorf("log has %d bytes, want all %d of stderr", len(log), all.Len())
	}
	desc := trainingError(0, tail, runErr).Error()
	if wantPrefix := "training command exited with status 3 in round 0; stderr tail:\n"; !strings.HasPrefix(desc, wantPrefix) || !strings.HasSuffix(desc, "line 1999\n") {
		t.Errorf("description %q..., want it to start with %q and end with the tail", desc[:80], wantPrefix)
	}
}

func TestRunSignal(t *testing.T) {
	c := shCommand(t, `kill -KILL $$`, time.Minute)
	_, err := c.run(context.Background())
	var ee *exitError
	if !errors.As(err, &ee) || ee.signal != syscall.SIGKILL || ee.code() != 137 {
		t.Fatalf("got %v, want killed by SIGKILL (code 137)", err)
	}
}

func TestRunStartError(t *testing.T) {
	c := shCommand(t, "", time.Minute)
	c.Argv = []string{filepath.Join(c.Dir, "no-such-program")}
	_, err := c.run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "start training command") {
		t.Fatalf("got %v, want a start error", err)
	}
}

func TestRunTimeoutKillsGroup(t *testing.T) {
	tests := []struct {
		name   string
		script string
	}{
		{name: "terminates on SIGTERM", script: `echo $$ > pgid; sleep 100 & sleep 100`},
		// Ignored signals stay ignored across exec, so the sleeps ignore
		// SIGTERM too: only SIGKILL after the grace ends them.
		{name: "ignores SIGTERM", script: `trap '' TERM; echo $$ > pgid; sleep 100 & sleep 100`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := shCommand(t, tt.script+"; echo never >&2", 500*time.Millisecond)
			start := time.Now()
			_, err := c.run(context.Background())
			var te *timeoutError
			if !errors.As(err, &te) || te.after != c.Timeout {
				t.Fatalf("got %v, want a timeout after %v", err, c.Timeout)
			}
			if took := time.Since(start); took > 20*time.Second {
				t.Errorf("run took %v", took)
			}
			checkGroupGone(t, readPgid(t, c))
			want := "training command timed out after 500ms in round 2 and was killed; stderr was empty"
			if got := trainingError(2, nil, err).Error(); got != want {
				t.Errorf("description %q, want %q", got, want)
			}
		})
	}
}

func TestRunCancel(t *testing.T) {
	c := shCommand(t, `echo $$ > pgid; sleep 100 & sleep 100`, time.Minute)
	ctx, cancel := context.WithCancelCause(context.Background())
	go func() {
		// Cancel once the script is running.
		for {
			if _, err := os.Stat(filepath.Join(c.Dir, "pgid")); err == nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		cancel(errStopped)
	}()
	_, err := c.run(ctx)
	if !errors.Is(err, errStopped) {
		t.Fatalf("got %v, want %v", err, errStopped)
	}
	checkGroupGone(t, readPgid(t, c))
}

func TestTailBuffer(t *testing.T) {
	tests := []struct {
		name   string
		writes []string
		want   string
	}{
		{name: "empty", want: ""},
		{name: "fits", writes: []string{"ab", "cd"}, want: "abcd"},
		{name: "exactly full", writes: []string{"abc", "de"}, want: "abcde"},
		{name: "overflow across writes", writes: []string{"abc", "def", "g"}, want: "cdefg"},
		{name: "one big write", writes: []string{"0123456789"}, want: "56789"},
		{name: "big write after small", writes: []string{"ab", "0123456789", "x"}, want: "6789x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &tailBuffer{max: 5}
			for _, w := range tt.writes {
				if n, err := b.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			if got := string(b.Bytes()); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}
