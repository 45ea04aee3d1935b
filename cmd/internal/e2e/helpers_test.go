package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/cmd/internal/proctest"
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

// anyPort asks the kernel for a free port; the director's start-up line
// says which it got.
const anyPort = "127.0.0.1:0"

// pollInterval is how often eventually looks at the state it waits for.
const pollInterval = 20 * time.Millisecond

// proc is a started binary.
type proc = proctest.Proc

// start runs a built binary with args; the test's end kills it if still running.
func start(tb testing.TB, name string, args ...string) *proc {
	tb.Helper()
	return proctest.Start(tb, filepath.Join(binDir, name), args...)
}

// eventually polls cond until it holds, and fails the test naming what it
// waited for if timeout passes first.
func eventually(tb testing.TB, timeout time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		case <-tick.C:
		}
	}
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
	web     string // the web console's address, "" when off
	client  directorpb.DirectorClient
}

// startDirector starts `director serve` on dataDir, listening on grpcAddr and
// adminAddr (anyPort, or the addresses of an earlier start: see
// restartDirector), with extra flags appended. It returns once the director
// has logged that it serves, which it does after binding both ports.
func startDirector(tb testing.TB, dataDir, grpcAddr, adminAddr string, extra ...string) *director {
	tb.Helper()
	args := append([]string{"serve", "--data-dir", dataDir, "--grpc-listen", grpcAddr,
		"--admin-listen", adminAddr, "--log-level", "debug"}, extra...)
	p, addrs := proctest.StartDirector(tb, filepath.Join(binDir, "director"), args...)
	conn, err := grpc.NewClient(addrs.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return &director{proc: p, dataDir: dataDir, grpc: addrs.GRPC, admin: addrs.Admin, web: addrs.Web, client: directorpb.NewDirectorClient(conn)}
}

// startDirectorAdmin starts a director on ports the kernel picks.
func startDirectorAdmin(tb testing.TB, dataDir string, extra ...string) *director {
	tb.Helper()
	return startDirector(tb, dataDir, anyPort, anyPort, extra...)
}

// restartDirector starts a director on d's data dir and on d's addresses,
// after d has exited. Running envoys keep the address they were started
// with, so a restart on port 0 would leave them calling a dead port: the
// restart binds again the ports that the first start got from the kernel.
// Another process could be handed one of them in the moment between the
// exit and the restart; that is unlikely, and would fail the restart with
// "address already in use" rather than let a test pass wrongly.
func restartDirector(tb testing.TB, d *director, extra ...string) *director {
	tb.Helper()
	return startDirector(tb, d.dataDir, d.grpc, d.admin, extra...)
}
