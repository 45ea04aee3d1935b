package envoy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

const (
	// tailSize is how much of the end of a training command's stderr is
	// kept for the failure report.
	tailSize = 4 << 10
	// reapTimeout bounds the wait for a killed process group to vanish; a
	// process stuck in the kernel cannot be waited for forever.
	reapTimeout = 5 * time.Second
	// drainTimeout bounds the wait for the end of stderr once the process
	// group is gone: a process that left the group may still hold the pipe.
	drainTimeout = 2 * time.Second
	// reapPoll is how often a dying process group is checked.
	reapPoll = 10 * time.Millisecond
)

// command is one run of a training command.
type command struct {
	// Argv is the program and its arguments; the program is run as given
	// (an absolute or relative path) or looked up in PATH.
	Argv []string
	// Dir is the working directory.
	Dir string
	// Env is the whole environment.
	Env []string
	// LogPath receives stdout and stderr, appended, as a training log
	// bounded at maxTrainLog bytes (trainLog).
	LogPath string
	// PgidPath, if set, holds the process group id while the command runs,
	// so an envoy restarted after a kill -9 can stop what it left behind
	// (killOrphans).
	PgidPath string
	// Timeout bounds the run; then the process group is stopped.
	Timeout time.Duration
	// Grace is the time between SIGTERM and SIGKILL when stopping.
	Grace time.Duration
	// Cred, if set, is the user the command runs as (the envoy must be
	// root to switch); nil runs it as the envoy's user.
	Cred *syscall.Credential
	// Wrap, if set, is a sandbox's command line that Argv is appended to
	// (bubblewrap's, ending in "--"). The sandbox program leads the
	// process group; see stop.
	Wrap []string
}

// exitError is a training command that ended unsuccessfully by itself.
type exitError struct {
	status int            // the exit status, or -1 when killed by a signal
	signal syscall.Signal // the signal that killed it, if status is -1
}

func (e *exitError) Error() string {
	if e.status < 0 {
		return fmt.Sprintf("killed by signal %d (%v)", int(e.signal), e.signal)
	}
	return fmt.Sprintf("exited with status %d", e.status)
}

// code is the error code to report: the exit status, or 128 plus the
// signal as shells say it.
func (e *exitError) code() uint32 {
	if e.status < 0 {
		return 128 + uint32(e.signal)
	}
	return uint32(e.status)
}

// timeoutError is a training command stopped because it ran too long.
type timeoutError struct{ after time.Duration }

func (e *timeoutError) Error() string { return fmt.Sprintf("timed out after %v", e.after) }

// run runs c in its own session, and so its own process group (a session
// has no controlling terminal, so the command cannot type into the
// operator's, TIOCSTI), and waits until the leader has exited
// and no process of the group is left, killing the group when the leader
// exits, when c.Timeout passes, or when ctx ends (SIGTERM, then SIGKILL after
// c.Grace). It returns the last tailSize bytes of stderr and nil, an
// *exitError, a *timeoutError, ctx's cause, or an error starting the command.
func (c *command) run(ctx context.Context) ([]byte, error) {
	if len(c.Argv) == 0 {
		return nil, errors.New("empty training command")
	}
	becomeSubreaper()
	logf, err := openTrainLog(c.LogPath, maxTrainLog)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	// stdout and stderr go through pipes of our own rather than exec's, so
	// that waiting for the leader does not wait for every process holding
	// them, and so that the log, which the envoy writes, stays bounded.
	pr, pw, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("stderr pipe: %w", err)
	}
	defer pr.Close()
	or, ow, err := os.Pipe()
	if err != nil {
		pw.Close()
		return nil, fmt.Errorf("stdout pipe: %w", err)
	}
	defer or.Close()

	argv := append(slices.Clone(c.Wrap), c.Argv...)
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = c.Dir
	cmd.Env = c.Env
	cmd.Stdout = ow
	cmd.Stderr = pw
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: c.Cred}
	err = cmd.Start()
	pw.Close()
	ow.Close()
	if err != nil {
		return nil, fmt.Errorf("start training command: %w", err)
	}
	pgid := cmd.Process.Pid
	if c.PgidPath != "" {
		if err := os.WriteFile(c.PgidPath, []byte(strconv.Itoa(pgid)+"\n"+c.Dir+"\n"), 0o600); err == nil {
			defer os.Remove(c.PgidPath)
		}
	}

	tail := &tailBuffer{max: tailSize}
	var copies sync.WaitGroup
	// Every byte of stderr goes to the tail; the log is best effort, so
	// that a full disk does not turn into a SIGPIPE for the command.
	copies.Go(func() { io.Copy(teeWriter{tail, logf}, pr) })
	copies.Go(func() { io.Copy(teeWriter{nil, logf}, or) })
	drained := make(chan struct{})
	go func() {
		copies.Wait()
		close(drained)
	}()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	timer := time.NewTimer(c.Timeout)
	defer timer.Stop()
	var (
		werr error
		why  error // why the command was stopped, if it was
	)
	select {
	case werr = <-exited:
	case <-timer.C:
		why = &timeoutError{after: c.Timeout}
		werr = c.stop(pgid, exited)
	case <-ctx.Done():
		why = context.Cause(ctx)
		werr = c.stop(pgid, exited)
	}
	// The leader is reaped. What it left in its group (background
	// children, say) must not outlive the run; nor, when the command runs
	// as a user of its own, what it started in a session of its own.
	killGroup(pgid, reapTimeout)
	if c.Cred != nil {
		killUser(c.Cred.Uid)
	}

	select {
	case <-drained:
	case <-time.After(drainTimeout):
		pr.Close() // unblocks the copies
		or.Close()
		<-drained
	}
	t := tail.Bytes()
	if why != nil {
		return t, why
	}
	if werr != nil {
		var ee *exec.ExitError
		if !errors.As(werr, &ee) {
			return t, fmt.Errorf("wait for training command: %w", werr)
		}
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return t, &exitError{status: -1, signal: ws.Signal()}
		}
		return t, &exitError{status: ee.ExitCode()}
	}
	return t, nil
}

// stop sends SIGTERM to the process group, gives it c.Grace to exit, then
// sends SIGKILL, and returns the leader's wait error once it is reaped.
//
// A sandbox program leading the group is spared the SIGTERM: bubblewrap
// does not pass it on but dies of it, and its sandbox with it, SIGKILLed at
// once, leaving the command no grace. The command gets the SIGTERM itself
// (the sandbox's processes stay in the group), and bubblewrap exits with
// the command's status once the command is gone.
func (c *command) stop(pgid int, exited <-chan error) error {
	if len(c.Wrap) > 0 {
		signalMembers(pgid, syscall.SIGTERM)
	} else {
		syscall.Kill(-pgid, syscall.SIGTERM)
	}
	grace := time.NewTimer(c.Grace)
	defer grace.Stop()
	select {
	case err := <-exited:
		// The leader is gone; the rest of the group has what is left of
		// the grace to follow it.
		waitGroup(pgid, grace.C)
		return err
	case <-grace.C:
		syscall.Kill(-pgid, syscall.SIGKILL)
		return <-exited
	}
}

// killGroup sends SIGKILL to process group pgid, whose leader is reaped,
// and waits up to timeout until none of its processes is left.
func killGroup(pgid int, timeout time.Duration) {
	if syscall.Kill(-pgid, syscall.SIGKILL) != nil {
		return // ESRCH: nothing left
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	waitGroup(pgid, t.C)
}

// waitGroup reaps the group's processes (which are the envoy's children
// once their parent is gone, as the envoy is a subreaper) until none is
// left or until done fires. Only call it once the leader is reaped, or it
// could steal the leader's exit status from exec.
func waitGroup(pgid int, done <-chan time.Time) {
	tick := time.NewTicker(reapPoll)
	defer tick.Stop()
	for {
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-pgid, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
		if errors.Is(syscall.Kill(-pgid, 0), syscall.ESRCH) {
			return
		}
		select {
		case <-tick.C:
		case <-done:
			return
		}
	}
}

// subreaper is set once the process is a child subreaper.
var subreaper sync.Once

// becomeSubreaper makes the process the reaper of its orphaned descendants
// where the system supports it, so that the grandchildren a training
// command leaves behind are reaped by the envoy, not left as zombies of an
// init that may not reap them.
func becomeSubreaper() {
	subreaper.Do(setSubreaper)
}

// teeWriter writes everything to the tail, if any, and what it can to
// the log.
type teeWriter struct {
	tail *tailBuffer
	log  io.Writer
}

func (w teeWriter) Write(p []byte) (int, error) {
	if w.tail != nil {
		w.tail.Write(p)
	}
	w.log.Write(p)
	return len(p), nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	buf []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	if len(p) >= t.max {
		t.buf = append(t.buf[:0], p[len(p)-t.max:]...)
		return n, nil
	}
	if over := len(t.buf) + len(p) - t.max; over > 0 {
		t.buf = t.buf[:copy(t.buf, t.buf[over:])]
	}
	t.buf = append(t.buf, p...)
	return n, nil
}

// Bytes returns a copy of the kept bytes.
func (t *tailBuffer) Bytes() []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	return append([]byte(nil), t.buf...)
}

// killOrphans kills the training process group recorded in pgidPath by an
// envoy that was killed before it could, if that group still runs in the
// recorded folder (a check against a reused pid), and removes the record.
func killOrphans(pgidPath string) (int, bool) {
	b, err := os.ReadFile(pgidPath)
	if err != nil {
		return 0, false
	}
	defer os.Remove(pgidPath)
	first, dir, _ := strings.Cut(string(b), "\n")
	pgid, err := strconv.Atoi(first)
	if err != nil || pgid <= 1 {
		return 0, false
	}
	dir = strings.TrimSpace(dir)
	if cwd, err := os.Readlink("/proc/" + first + "/cwd"); err != nil || cwd != dir {
		return pgid, false
	}
	return pgid, syscall.Kill(-pgid, syscall.SIGKILL) == nil
}
