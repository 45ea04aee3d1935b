package envoy

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// testRunAs is the user tests run training as: it exists on Debian and
// most other systems, and owns nothing of the test's.
const testRunAs = "nobody"

// needRoot skips tests of switching users where the test cannot switch.
func needRoot(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("switching users needs root; CI runs the tests as root")
	}
}

// needBwrap skips sandbox tests where bubblewrap is missing.
func needBwrap(tb testing.TB) {
	tb.Helper()
	if _, err := exec.LookPath(bwrapProgram); err != nil {
		tb.Skip("bwrap (bubblewrap) is not installed; CI installs it")
	}
}

// mustOpenDir returns a new temp folder that every user can enter and
// read, as can the folder above it (t.TempDir makes both 0700), so that a
// training command running as another user can reach it.
func mustOpenDir(tb testing.TB) string {
	tb.Helper()
	dir := tb.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	return dir
}

// probeScript reports what the training command can do, one "what: result"
// line each, on stdout (the round's log). Its arguments: the envoy's key,
// another experiment's folder, a port the test listens on at 127.0.0.1.
const probeScript = `cp "$FEDPLANE_INPUT_MODEL" "$FEDPLANE_OUTPUT_MODEL"
echo "uid: $(id -u)"
if [ -n "$(cat "$1" 2>/dev/null)" ]; then echo "key: read"; else echo "key: hidden"; fi
if ls "$2" >/dev/null 2>&1; then echo "other experiment: read"; else echo "other experiment: hidden"; fi
if touch "$FEDPLANE_DATA/written" 2>/dev/null; then echo "shard: written"; else echo "shard: read-only"; fi
if [ "$(cat "$FEDPLANE_DATA/data.csv")" = "1,2,3" ]; then echo "data: read"; else echo "data: missing"; fi
if touch "$HOME/h" "$TMPDIR/t"; then echo "home, tmp: written"; fi
if bash -c "echo hi > /dev/tcp/127.0.0.1/$3" 2>/dev/null; then echo "network: reached"; else echo "network: unreachable"; fi
`

// TestIsolationLevels runs the probe at each isolation level and checks
// what each one stops: --run-as the key, other experiments and writes to
// the shard; --sandbox those and the network.
func TestIsolationLevels(t *testing.T) {
	needRoot(t)
	nobody, err := lookupAccount(testRunAs)
	if err != nil {
		t.Skipf("no user %s: %v", testRunAs, err)
	}
	uid := strconv.Itoa(int(nobody.uid))
	tests := []struct {
		name    string
		runAs   string
		sandbox bool
		want    []string
	}{
		{"as the envoy", "", false, []string{"uid: 0", "key: read", "other experiment: read", "shard: written", "data: read", "home, tmp: written", "network: reached"}},
		{"run as", testRunAs, false, []string{"uid: " + uid, "key: hidden", "other experiment: hidden", "shard: read-only", "data: read", "home, tmp: written", "network: reached"}},
		{"sandbox", "", true, []string{"uid: 0", "key: hidden", "other experiment: hidden", "shard: read-only", "data: read", "home, tmp: written", "network: unreachable"}},
		{"run as in a sandbox", testRunAs, true, []string{"uid: " + uid, "key: hidden", "other experiment: hidden", "shard: read-only", "data: read", "home, tmp: written", "network: unreachable"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.sandbox {
				needBwrap(t)
			}
			// The sandbox has a fresh /tmp, which would hide the test's
			// files by itself; outside /tmp only the envoy's own hiding
			// can.
			if fi, err := os.Stat("/var/tmp"); err == nil && fi.IsDir() {
				t.Setenv("TMPDIR", "/var/tmp")
			}
			// The key as an envoy keeps it: 0600, in a folder others
			// may enter.
			key := filepath.Join(mustOpenDir(t), "site-1.key")
			if err := os.WriteFile(key, []byte("PRIVATE KEY"), 0o600); err != nil {
				t.Fatal(err)
			}
			// A certificate in a folder the run-as user cannot enter.
			closed := filepath.Join(mustOpenDir(t), "private")
			if err := os.Mkdir(closed, 0o700); err != nil {
				t.Fatal(err)
			}
			cert := filepath.Join(closed, "site-1.crt")
			if err := os.WriteFile(cert, []byte("CERTIFICATE"), 0o644); err != nil {
				t.Fatal(err)
			}
			shard := mustOpenDir(t)
			if err := os.WriteFile(filepath.Join(shard, "data.csv"), []byte("1,2,3"), 0o644); err != nil {
				t.Fatal(err)
			}
			work := filepath.Join(mustOpenDir(t), "work")
			other := filepath.Join(work, "0a1b2c3d-other-experiment")
			if err := os.MkdirAll(other, 0o700); err != nil {
				t.Fatal(err)
			}
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer lis.Close()
			go func() {
				for {
					c, err := lis.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}()
			port := strconv.Itoa(lis.Addr().(*net.TCPAddr).Port)

			fl := newFlow(t, mustJob(t, []string{"sh", "-c", probeScript, "probe", key, other, port}, nil))
			e := mustEnvoy(t, fl.fakeDirector, 600, func(c *Config) {
				c.ShardDir, c.WorkDir, c.Secrets = shard, work, []string{key, cert}
				c.RunAs, c.Sandbox = tt.runAs, tt.sandbox
			})
			stop, _ := startRun(t, e)
			fl.finished(t)
			if err := stop(); err != nil {
				t.Fatalf("Run = %v", err)
			}
			fl.check(t)
			fl.mu.Lock()
			failed, results := fl.failed, fl.results
			fl.mu.Unlock()
			if failed != nil {
				t.Fatalf("experiment failed: %v", failed)
			}
			if results == nil {
				t.Fatal("no results: the training command could not train")
			}
			log, err := os.ReadFile(filepath.Join(work, testID, logsDirName, trainLogName))
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, l := range strings.Split(strings.TrimSpace(string(log)), "\n") {
				if strings.Contains(l, ": ") {
					got = append(got, l)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("the training command reported\n%s\nwant\n%s\nlog:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"), log)
			}
			checkCleaned(t, e)
			if fi, err := os.Stat(filepath.Join(work, testID)); err != nil || fi.Mode().Perm() != 0o700 {
				t.Errorf("experiment folder after the run: %v, %v; want mode 0700", fi.Mode(), err)
			}
		})
	}
}

// TestEnvironmentIsClean checks that the training command gets the
// contract's variables, HOME, LANG, PATH and TMPDIR, and nothing of the
// envoy's own environment.
func TestEnvironmentIsClean(t *testing.T) {
	t.Setenv("FEDPLANE_TEST_SECRET", "cloud-token")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "cloud-token")
	// The environment the shell was started with, not its own additions.
	script := `cp "$FEDPLANE_INPUT_MODEL" "$FEDPLANE_OUTPUT_MODEL"; tr '\0' '\n' < /proc/$$/environ`
	fl := newFlow(t, mustJob(t, []string{"sh", "-c", script}, nil))
	e := mustEnvoy(t, fl.fakeDirector, 600)
	stop, _ := startRun(t, e)
	fl.finished(t)
	if err := stop(); err != nil {
		t.Fatalf("Run = %v", err)
	}
	if n := fl.called("SetExperimentFailed"); n != 0 {
		t.Fatalf("SetExperimentFailed called %d times", n)
	}
	log, err := os.ReadFile(filepath.Join(e.cfg.WorkDir, testID, logsDirName, trainLogName))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(log, []byte("cloud-token")) {
		t.Errorf("the envoy's environment reached the training command:\n%s", log)
	}
	xdir := filepath.Join(e.cfg.WorkDir, testID)
	path := os.Getenv("PATH")
	if path == "" {
		path = defaultPath
	}
	rdir := filepath.Join(xdir, "round-0")
	want := []string{
		"FEDPLANE_INPUT_MODEL=" + filepath.Join(rdir, inputModelName),
		"FEDPLANE_OUTPUT_MODEL=" + filepath.Join(rdir, outputModelName),
		"FEDPLANE_METRICS=" + filepath.Join(rdir, metricsName),
		"FEDPLANE_DATA=" + e.cfg.ShardDir,
		"FEDPLANE_ROUND=0",
		"FEDPLANE_ENVOY=site-1",
		"FEDPLANE_EXPERIMENT=" + testID,
		"FEDPLANE_SAMPLES=600",
		"HOME=" + filepath.Join(xdir, homeDirName),
		"LANG=" + cmpOr(os.Getenv("LANG"), defaultLang),
		"PATH=" + path,
		"TMPDIR=" + filepath.Join(xdir, tmpDirName),
	}
	got := strings.Split(strings.TrimSpace(string(log)), "\n")
	if !slices.Equal(got, want) {
		t.Errorf("environment\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// TestNewRefuses checks what New refuses before anything runs: training
// as root unless allowed, a run-as user who cannot reach the work dir or
// read the shard, a sandbox without bubblewrap.
func TestNewRefuses(t *testing.T) {
	needRoot(t)
	closed := filepath.Join(mustOpenDir(t), "closed")
	if err := os.Mkdir(closed, 0o700); err != nil { // nobody cannot enter
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		cfg     func(testing.TB, *Config)
		wantErr string
		wantIs  error
	}{
		{"root without allow-root", func(_ testing.TB, c *Config) { c.AllowRoot = false }, "training would run as root: the envoy runs as root", ErrRoot},
		{"run as root without allow-root", func(_ testing.TB, c *Config) { c.AllowRoot, c.RunAs = false, "0" }, "training would run as root: run as root (uid 0)", ErrRoot},
		{"unknown user", func(_ testing.TB, c *Config) { c.RunAs = "no-such-user-fedplane" }, `run as "no-such-user-fedplane": user: unknown user`, nil},
		{"work dir out of reach", func(_ testing.TB, c *Config) { c.RunAs, c.WorkDir = testRunAs, filepath.Join(closed, "work") }, "work dir " + filepath.Join(closed, "work") + ": user nobody (uid 65534) cannot enter " + closed + " (mode -rwx------)", nil},
		{"shard unreadable", func(_ testing.TB, c *Config) { c.RunAs, c.ShardDir = testRunAs, closed }, "shard dir " + closed + ": user nobody (uid 65534) lacks rx permission on it (mode -rwx------, owner uid 0)", nil},
		{"sandbox without bwrap", func(t testing.TB, c *Config) { c.Sandbox = true; t.Setenv("PATH", t.TempDir()) }, "sandbox: bwrap (bubblewrap) is not installed or not in PATH", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{
				Name:      "site-1",
				Directors: []string{bufTarget},
				ShardDir:  mustOpenDir(t),
				WorkDir:   filepath.Join(mustOpenDir(t), "work"),
				AllowRoot: true,
			}
			tt.cfg(t, &cfg)
			_, err := New(cfg)
			if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
				t.Fatalf("New = %v, want an error starting with %q", err, tt.wantErr)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("New = %v, want it to wrap %v", err, tt.wantIs)
			}
		})
	}
}

// TestSandboxStopGivesGrace stops a sandboxed command and checks that it
// gets its SIGTERM and the grace to act on it (bubblewrap, which leads the
// group, would take the sandbox down with SIGKILL at once if it got the
// SIGTERM), and that nothing of the group is left afterwards.
func TestSandboxStopGivesGrace(t *testing.T) {
	needBwrap(t)
	root := t.TempDir()
	dirs := map[string]string{}
	for _, name := range []string{"work", "job", "round", "shard"} {
		dirs[name] = filepath.Join(root, name)
		if err := os.Mkdir(dirs[name], 0o700); err != nil {
			t.Fatal(err)
		}
	}
	started := filepath.Join(dirs["round"], "started")
	v := view{workDir: dirs["work"], jobDir: dirs["job"], writable: []string{dirs["round"]}, shard: dirs["shard"]}
	c := &command{
		Argv:     []string{"sh", "-c", `trap 'sleep 0.2; echo graceful exit >&2; exit 5' TERM; sleep 100 & touch "$1"; wait`, "sh", started},
		Dir:      dirs["job"],
		Env:      []string{"PATH=" + defaultPath},
		LogPath:  filepath.Join(root, "run.log"),
		PgidPath: filepath.Join(root, "pgid"),
		Timeout:  time.Minute,
		Grace:    time.Minute,
		Wrap:     v.argv(sandboxFlags(os.Geteuid() == 0)),
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	// Stop the command once it runs, noting its process group first.
	pgid := make(chan int, 1)
	go func() {
		defer cancel(errors.New("stop"))
		for {
			b, err := os.ReadFile(c.PgidPath)
			if _, serr := os.Stat(started); err == nil && serr == nil {
				n, _ := strconv.Atoi(strings.SplitN(string(b), "\n", 2)[0])
				pgid <- n
				return
			}
			select {
			case <-ctx.Done():
				pgid <- 0
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	tail, err := c.run(ctx)
	if err == nil || err.Error() != "stop" {
		t.Fatalf("run = %v, want the context's cause", err)
	}
	if !bytes.Contains(tail, []byte("graceful exit")) {
		t.Errorf("stderr %q: the command had no grace after SIGTERM", tail)
	}
	if g := <-pgid; g > 0 {
		checkGroupGone(t, g)
	} else {
		t.Error("the process group was not recorded")
	}
}

// TestRunAsLeavesNothingRunning: a command run as another user that starts
// a session of its own (out of the group the envoy kills) does not outlive
// its run, so it cannot reach into the next run's folders as that user.
func TestRunAsLeavesNothingRunning(t *testing.T) {
	needRoot(t)
	nobody, err := lookupAccount(testRunAs)
	if err != nil {
		t.Skipf("no user %s: %v", testRunAs, err)
	}
	marker := "977.0" + strconv.Itoa(os.Getpid()%1000)
	c := shCommand(t, "setsid sleep "+marker+" </dev/null >/dev/null 2>&1 & sleep 0.2", 10*time.Second)
	c.Cred = nobody.credential()
	for _, d := range []string{filepath.Dir(c.Dir), c.Dir} { // t.TempDir's are 0700
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.run(context.Background()); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir("/proc")
	for _, d := range entries {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		if b, err := os.ReadFile("/proc/" + d.Name() + "/cmdline"); err == nil && strings.Contains(string(b), marker) {
			if st, err := os.ReadFile("/proc/" + d.Name() + "/stat"); err == nil && !strings.Contains(string(st), ") Z ") {
				t.Errorf("process %d (%q) of user %s outlived its run", pid, bytes.ReplaceAll(b, []byte{0}, []byte{' '}), testRunAs)
			}
		}
	}
}
