package envoy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

const (
	// bwrapProgram is bubblewrap, looked up in PATH.
	bwrapProgram = "bwrap"
	// probeTimeout bounds the trial run of bubblewrap at start.
	probeTimeout = 30 * time.Second
)

// gpuDevices are the device nodes a training command may need beyond the
// sandbox's minimal /dev (null, zero, random, tty, shm...): NVIDIA's and
// AMD's GPUs and the DRM render nodes. They are bound in when present.
var gpuDevices = []string{"/dev/nvidia*", "/dev/dri", "/dev/kfd"}

// sandboxFlags are bubblewrap's flags for every run: new PID, network, IPC,
// UTS and cgroup namespaces (so no network at all, not even the host's
// loopback, and no sight of the host's processes), the whole file system
// read-only with fresh /dev, /proc and /tmp, and the sandbox killed when the
// envoy dies. asRoot drops every capability, which bubblewrap keeps for a
// root caller unless told: root in the sandbox could otherwise remount the
// file system writable.
//
// bubblewrap's --new-session is not used: it would put the command in a new
// process group that the envoy's group kill cannot reach. The envoy starts
// bubblewrap in a session of its own instead (command.run), which keeps the
// command off any controlling terminal just the same.
func sandboxFlags(asRoot bool) []string {
	args := []string{
		"--die-with-parent",
		"--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
		"--ro-bind", "/", "/",
		"--dev", "/dev",
		"--proc", "/proc",
		"--tmpfs", "/tmp",
	}
	for _, pattern := range gpuDevices {
		devs, _ := filepath.Glob(pattern)
		for _, d := range devs {
			args = append(args, "--dev-bind", d, d)
		}
	}
	if asRoot {
		args = append(args, "--cap-drop", "ALL")
	}
	return args
}

// view is what one run of a training command sees of the envoy's files.
type view struct {
	workDir  string   // hidden whole, then:
	jobDir   string   // read-only, the working directory
	writable []string // the round's folder, the run's home and temp dir
	shard    string   // read-only
	secrets  []string // hidden (an empty file in their place)
}

// argv is the bubblewrap command line that runs a training command in v,
// up to and including the "--" after which the command's own argv goes.
// Paths are resolved first: a mount follows links, so "/data" linking to
// "/mnt/data" must be bound at "/mnt/data" for either name to work.
func (v view) argv(flags []string) []string {
	args := append([]string{bwrapProgram}, flags...)
	args = append(args, "--tmpfs", realPath(v.workDir))
	args = append(args, "--ro-bind", realPath(v.jobDir), realPath(v.jobDir))
	for _, w := range v.writable {
		args = append(args, "--bind", realPath(w), realPath(w))
	}
	args = append(args, "--ro-bind", realPath(v.shard), realPath(v.shard))
	for _, s := range v.secrets {
		if _, err := os.Stat(s); err == nil {
			args = append(args, "--ro-bind", os.DevNull, realPath(s))
		}
	}
	return append(args, "--chdir", v.jobDir, "--")
}

// realPath is path with its links resolved, or path itself if that fails.
func realPath(path string) string {
	if p, err := filepath.EvalSymlinks(path); err == nil {
		return p
	}
	return path
}

// probeSandbox runs "true" in a sandbox with flags, as cred (nil: as the
// envoy), and says clearly why it cannot when it cannot: bubblewrap is
// missing, or the system forbids what it needs (user namespaces for a
// caller that is not root).
func probeSandbox(ctx context.Context, flags []string, cred *syscall.Credential) error {
	path, err := exec.LookPath(bwrapProgram)
	if err != nil {
		return fmt.Errorf("sandbox: %s (bubblewrap) is not installed or not in PATH; install it (Debian, Ubuntu: apt-get install bubblewrap) or run without the sandbox", bwrapProgram)
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, append(flags, "--", "true")...)
	cmd.Env = []string{"PATH=" + defaultPath}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Credential: cred}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = err.Error()
		}
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			return fmt.Errorf("sandbox: run %s: %w", path, err)
		}
		return fmt.Errorf("sandbox: %s cannot make a sandbox here: %s", path, msg)
	}
	return nil
}
