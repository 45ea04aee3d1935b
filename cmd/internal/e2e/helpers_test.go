package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/fedplane/fedplane/api/directorpb"
)

// binDir holds the binaries TestMain builds.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fedplane-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	out, err := exec.Command("go", "build", "-o", dir, "github.com/fedplane/fedplane/cmd/director", "github.com/fedplane/fedplane/cmd/envoy", "github.com/fedplane/fedplane/cmd/fladmin").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build binaries: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// syncBuffer is a bytes.Buffer safe for a process writer and a test reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is a started binary.
type proc struct {
	cmd    *exec.Cmd
	output *syncBuffer
	done   chan struct{}
	err    error
}

// start runs a built binary with args; the test's end kills it if still running.
func start(tb testing.TB, name string, args ...string) *proc {
	tb.Helper()
	p := &proc{output: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(filepath.Join(binDir, name), args...)
	p.cmd.Stdout, p.cmd.Stderr = p.output, p.output
	if err := p.cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	go func() { p.err = p.cmd.Wait(); close(p.done) }()
	tb.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		if tb.Failed() {
			tb.Logf("%s output:\n%s", name, p.output.String())
		}
	})
	return p
}

// stop sends SIGTERM and returns the exit error and how long the exit took.
func (p *proc) stop(tb testing.TB, limit time.Duration) (error, time.Duration) {
	tb.Helper()
	t0 := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return p.err, time.Since(t0)
	case <-time.After(limit):
		tb.Fatalf("process did not exit within %v of SIGTERM; output:\n%s", limit, p.output.String())
		return nil, 0
	}
}

// eventually polls cond until it holds or the timeout passes.
func eventually(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startDirector starts `director serve` on free ports and waits until its
// gRPC port answers. extra flags are appended.
func startDirector(tb testing.TB, dataDir, grpcAddr string, extra ...string) (*proc, directorpb.DirectorClient) {
	tb.Helper()
	args := append([]string{"serve", "--data-dir", dataDir, "--grpc-listen", grpcAddr,
		"--admin-listen", freeAddr(tb), "--log-level", "debug"}, extra...)
	p := start(tb, "director", args...)
	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	c := directorpb.NewDirectorClient(conn)
	eventually(tb, 60*time.Second, "director to serve on "+grpcAddr, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		defer cancel()
		_, err := c.GetDatasetInfo(ctx, &directorpb.GetDatasetInfoRequest{})
		select {
		case <-p.done:
			tb.Fatalf("director exited early: %v\n%s", p.err, p.output.String())
		default:
		}
		return err == nil
	})
	return p, c
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }

// result is a finished command's output and exit code.
type result struct {
	stdout, stderr string
	code           int
}

// run runs a built binary to completion (at most a minute).
func run(tb testing.TB, name string, args ...string) result {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, name), args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		ee, ok := err.(*exec.ExitError)
		if !ok {
			tb.Fatalf("%s %v: %v", name, args, err)
		}
		code = ee.ExitCode()
	}
	return result{stdout: stdout.String(), stderr: stderr.String(), code: code}
}

// fladmin runs fladmin against the admin address addr.
func fladmin(tb testing.TB, addr string, args ...string) result {
	tb.Helper()
	return run(tb, "fladmin", append([]string{"--addr", addr}, args...)...)
}

// mustFladmin runs fladmin and fails the test unless it exits 0.
func mustFladmin(tb testing.TB, addr string, args ...string) string {
	tb.Helper()
	r := fladmin(tb, addr, args...)
	if r.code != 0 {
		tb.Fatalf("fladmin %v: exit %d\nstdout: %s\nstderr: %s", args, r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

// director is a running director process with its addresses.
type director struct {
	proc    *proc
	dataDir string
	grpc    string
	admin   string
	client  directorpb.DirectorClient
}

// startDirectorAdmin starts a director with both ports on free addresses and
// waits until both answer.
func startDirectorAdmin(tb testing.TB, dataDir string, extra ...string) *director {
	tb.Helper()
	d := &director{dataDir: dataDir, grpc: freeAddr(tb), admin: freeAddr(tb)}
	d.proc, d.client = startDirector(tb, dataDir, d.grpc, append([]string{"--admin-listen", d.admin}, extra...)...)
	eventually(tb, 60*time.Second, "admin port "+d.admin, func() bool {
		return fladmin(tb, d.admin, "status").code == 0
	})
	return d
}
