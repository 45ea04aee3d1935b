// Package proctest runs fedplane's binaries as processes for the end-to-end
// and soak tests, and lets a test wait for what a process logs instead of
// sleeping a guessed time. A director under test listens on port 0, and
// StartDirector learns the ports the kernel picked from its start-up line,
// so no test guesses a free port (listening on :0, closing, and handing the
// port to a process is a race with everything else on the machine).
package proctest

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fedplane/fedplane/api"
)

// StartTimeout bounds how long StartDirector waits for the director to
// serve. It is generous because CI machines are slow and shared; a
// director that fails fails at once, exiting, which ends the wait early.
const StartTimeout = time.Minute

// servingMsg is the message of the director's start-up line, logged once
// both listeners are bound (director/server.Serve). Its attributes
// "grpc" and "admin" are the bound addresses.
const servingMsg = "director serving"

// Proc is a started binary.
type Proc struct {
	Cmd *exec.Cmd
	// Log holds everything the process wrote to stdout and stderr.
	Log *Log
	// Done is closed once the process has exited and its output is all in Log.
	Done <-chan struct{}
	// Err is the process's exit error; read it only after Done is closed.
	Err error

	name string
}

// Start runs the binary at path with args, with stdout and stderr going to
// the returned Proc's Log. When the test ends, the process is killed if it
// still runs and waited for, and if the test failed its output is logged.
func Start(tb testing.TB, path string, args ...string) *Proc {
	tb.Helper()
	done := make(chan struct{})
	p := &Proc{Cmd: exec.Command(path, args...), Log: &Log{}, Done: done, name: filepath.Base(path)}
	p.Cmd.Stdout, p.Cmd.Stderr = p.Log, p.Log
	if err := p.Cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", p.name, err)
	}
	go func() {
		p.Err = p.Cmd.Wait()
		close(done)
	}()
	tb.Cleanup(func() {
		p.Kill()
		if tb.Failed() {
			tb.Logf("%s output:\n%s", p.name, p.Log)
		}
	})
	return p
}

// Kill kills the process with SIGKILL, if it still runs, and waits until it
// has exited.
func (p *Proc) Kill() {
	p.Cmd.Process.Kill()
	<-p.Done
}

// Stop sends SIGTERM and waits until the process exits, at most limit, which
// fails tb. It returns how long the exit took and the exit error.
func (p *Proc) Stop(tb testing.TB, limit time.Duration) (time.Duration, error) {
	tb.Helper()
	t0 := time.Now()
	p.Cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case <-p.Done:
		return time.Since(t0), p.Err
	case <-t.C:
		tb.Fatalf("%s did not exit within %v of SIGTERM; output:\n%s", p.name, limit, p.Log)
		return 0, nil
	}
}

// WaitRecord waits until the process logs a line whose message is msg (in
// slog's text or JSON form), and returns that line's attributes. It fails tb
// if the process exits first or timeout passes, with the process's output.
func (p *Proc) WaitRecord(tb testing.TB, timeout time.Duration, msg string) Record {
	tb.Helper()
	r, why := p.Log.find(msg, timeout, p.Done)
	switch why {
	case exited:
		tb.Fatalf("%s exited (%v) before logging %q; output:\n%s", p.name, p.Err, msg, p.Log)
	case timedOut:
		tb.Fatalf("%s did not log %q within %v; output:\n%s", p.name, msg, timeout, p.Log)
	}
	return r
}

// WaitCode waits for the exit code a program run in process (cli.Main on a
// goroutine) sends on done, and fails tb unless it is want within timeout.
func WaitCode(tb testing.TB, done <-chan int, want int, timeout time.Duration, log *Log) {
	tb.Helper()
	select {
	case code := <-done:
		if code != want {
			tb.Fatalf("exit %d, want %d\n%s", code, want, log)
		}
	case <-time.After(timeout):
		tb.Fatalf("did not exit within %v\n%s", timeout, log)
	}
}

// Addrs are the addresses a director serves on.
type Addrs struct {
	GRPC  string // the OpenFL gRPC services, for envoys
	Admin string // the admin port, for fladmin
	Web   string // the web console (--web-listen), or "" when off
}

// StartDirector starts the director binary at path with args, which are
// `serve` and its flags, and waits until the director logs that it serves
// (so --log-level must let INFO through). It returns the process and the
// addresses from that line: given --grpc-listen 127.0.0.1:0 and
// --admin-listen 127.0.0.1:0, the ports the kernel picked. Both listeners
// are bound before the line is logged, so both ports take connections as
// soon as StartDirector returns. It fails tb, showing the director's
// output, if the director exits first or does not serve within
// StartTimeout.
func StartDirector(tb testing.TB, path string, args ...string) (*Proc, Addrs) {
	tb.Helper()
	p := Start(tb, path, args...)
	r := p.WaitRecord(tb, StartTimeout, servingMsg)
	a := Addrs{GRPC: r[api.LogGRPC], Admin: r[api.LogAdmin], Web: r[api.LogWeb]}
	if a.GRPC == "" || a.Admin == "" {
		tb.Fatalf("the director's %q line lacks grpc= or admin=: %v", servingMsg, r)
	}
	return p, a
}

// NeedPython skips the test when python3 is not on PATH: the training
// commands that the test's jobs run are Python scripts.
func NeedPython(tb testing.TB) {
	tb.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		tb.Skip("python3 not found on PATH: the job's train.py needs it")
	}
}

// Log is a process's output, kept whole for failure messages. A test waits
// for lines in it with Proc.WaitRecord.
type Log struct {
	mu    sync.Mutex
	b     []byte
	grown chan struct{} // closed at the next Write; nil until someone waits
}

// Write appends p and wakes whoever waits for more output.
func (l *Log) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	if l.grown != nil {
		close(l.grown)
		l.grown = nil
	}
	return len(p), nil
}

// String returns the output so far.
func (l *Log) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}

// WaitRecord waits until l holds a line whose message is msg (in slog's
// text or JSON form), and returns that line's attributes. It fails tb, with
// the output, if timeout passes first.
func (l *Log) WaitRecord(tb testing.TB, timeout time.Duration, msg string) Record {
	tb.Helper()
	r, why := l.find(msg, timeout, nil)
	if why != found {
		tb.Fatalf("no %q logged within %v; output:\n%s", msg, timeout, l)
	}
	return r
}

// Outcomes of find.
const (
	found = iota
	exited
	timedOut
)

// find waits for a line whose message is msg until timeout passes or done
// (if not nil) is closed and the last lines have been looked at.
func (l *Log) find(msg string, timeout time.Duration, done <-chan struct{}) (Record, int) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	off, ended := 0, false
	for {
		lines, next, grown := l.linesFrom(off)
		for _, line := range lines {
			if r, ok := ParseRecord(line); ok && r["msg"] == msg {
				return r, found
			}
		}
		off = next
		if ended {
			return nil, exited
		}
		select {
		case <-grown:
		case <-done:
			ended = true // look at the last lines once more
		case <-deadline.C:
			return nil, timedOut
		}
	}
}

// linesFrom returns the complete lines that start at byte off or later, the
// offset just past them, and a channel closed at the next Write.
func (l *Log) linesFrom(off int) (lines []string, next int, grown <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.grown == nil {
		l.grown = make(chan struct{})
	}
	end := off + bytes.LastIndexByte(l.b[off:], '\n') + 1
	if end > off {
		lines = strings.Split(string(l.b[off:end-1]), "\n")
	}
	return lines, end, l.grown
}

// Record is one log line's attributes by key, values as text: "msg",
// "level", and the line's own.
type Record map[string]string

// ParseRecord parses a line that log/slog's TextHandler (key=value pairs,
// values quoted where needed) or JSONHandler (one object) wrote. It reports
// false for a line of neither form.
func ParseRecord(line string) (Record, bool) {
	line = strings.TrimSpace(line)
	if strings.HasPrefix(line, "{") {
		return parseJSON(line)
	}
	return parseText(line)
}

func parseJSON(line string) (Record, bool) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		return nil, false
	}
	r := Record{}
	for k, raw := range m {
		var s string
		if json.Unmarshal(raw, &s) != nil {
			s = string(raw) // a number, a bool or a group: its JSON text
		}
		r[k] = s
	}
	return r, true
}

func parseText(line string) (Record, bool) {
	r := Record{}
	for s := line; s != ""; s = strings.TrimLeft(s, " ") {
		k, rest, ok := textToken(s, '=')
		if !ok || k == "" || strings.ContainsRune(k, ' ') || !strings.HasPrefix(rest, "=") {
			return nil, false
		}
		v, rest, ok := textToken(rest[1:], ' ')
		if !ok {
			return nil, false
		}
		r[k] = v
		s = rest
	}
	return r, len(r) > 0 && r["msg"] != ""
}

// textToken reads a key or value at the start of s: a Go-quoted string, or
// the text up to stop. It returns the token unquoted and what follows it.
func textToken(s string, stop byte) (tok, rest string, ok bool) {
	if strings.HasPrefix(s, `"`) {
		q, err := strconv.QuotedPrefix(s)
		if err != nil {
			return "", "", false
		}
		tok, err = strconv.Unquote(q)
		return tok, s[len(q):], err == nil
	}
	if i := strings.IndexByte(s, stop); i >= 0 {
		return s[:i], s[i:], true
	}
	return s, "", true
}
