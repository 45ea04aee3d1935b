package packaging

import (
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"

	"github.com/fedplane/fedplane/director/server"
)

// parseDockerfile parses the repository's Dockerfile as BuildKit's
// frontend does (the same parser, instructions and linter), failing on a
// syntax error and on any warning the parser or the linter gives.
func parseDockerfile(tb testing.TB) []instructions.Stage {
	tb.Helper()
	f, err := os.Open(filepath.Join(root, "Dockerfile"))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	res, err := parser.Parse(f)
	if err != nil {
		tb.Fatalf("Dockerfile: %v", err)
	}
	for _, w := range res.Warnings {
		tb.Errorf("Dockerfile: %s", w.Short)
	}
	var lints []string
	lint := linter.New(&linter.Config{Warn: func(rule, _, _, msg string, loc []parser.Range) {
		line := 0
		if len(loc) > 0 {
			line = loc[0].Start.Line
		}
		lints = append(lints, fmt.Sprintf("line %d: %s: %s", line, rule, msg))
	}})
	stages, _, err := instructions.Parse(res.AST, lint)
	if err != nil {
		tb.Fatalf("Dockerfile: %v", err)
	}
	for _, l := range lints {
		tb.Errorf("Dockerfile: %s", l)
	}
	return stages
}

// commands returns the commands of type T in a stage, in order.
func commands[T instructions.Command](s instructions.Stage) []T {
	var out []T
	for _, c := range s.Commands {
		if t, ok := c.(T); ok {
			out = append(out, t)
		}
	}
	return out
}

// cmdDirRE finds the packages a go build names.
var cmdDirRE = regexp.MustCompile(`\./cmd/([a-z0-9_-]+)`)

// TestDockerfile checks the Dockerfile without a Docker engine: BuildKit's
// parser and linter accept it, and it is what the issue asked for: a
// multi-stage build on the Go go.mod names, CGO_ENABLED=0 (static, as
// TestStaticBinaries checks), every program the Makefile builds copied
// from a stage that exists, a numeric non-root user, the director's ports
// and data dir, and a default command whose flags the director takes.
func TestDockerfile(t *testing.T) {
	stages := parseDockerfile(t)
	if len(stages) < 2 {
		t.Fatalf("%d stages, want a build stage and a run stage", len(stages))
	}
	build, final := stages[0], stages[len(stages)-1]

	// The build stage's Go is go.mod's.
	goVersion := goModVersion(t)
	goMinor := strings.Join(strings.SplitN(goVersion, ".", 3)[:2], ".")
	if want := "golang:" + goMinor + "-"; !strings.HasPrefix(build.BaseName, want) {
		t.Errorf("build stage FROM %s, want %s... (go.mod: go %s)", build.BaseName, want, goVersion)
	}

	// go build: static, path-free, every program, and only packages that
	// exist.
	built := map[string]bool{}
	for _, run := range commands[*instructions.RunCommand](build) {
		line := strings.Join(run.CmdLine, " ")
		if !strings.Contains(line, "go build") {
			continue
		}
		for _, flag := range []string{"CGO_ENABLED=0", "-trimpath", "cmd/internal/cli.Version="} {
			if !strings.Contains(line, flag) {
				t.Errorf("RUN %s: no %s", line, flag)
			}
		}
		for _, m := range cmdDirRE.FindAllStringSubmatch(line, -1) {
			if fi, err := os.Stat(filepath.Join(root, "cmd", m[1])); err != nil || !fi.IsDir() {
				t.Errorf("RUN builds ./cmd/%s, which is not a folder of the repository: %v", m[1], err)
			}
			built[m[1]] = true
		}
	}

	// COPY --from names an earlier stage; the run stage gets every program.
	names := map[string]bool{}
	for i, s := range stages {
		for _, c := range commands[*instructions.CopyCommand](s) {
			if c.From != "" && !names[c.From] {
				t.Errorf("stage %d: COPY --from=%s names no earlier stage (have %v)", i, c.From, names)
			}
		}
		if s.Name != "" {
			names[s.Name] = true
		}
		names[strconv.Itoa(i)] = true
	}
	copied := map[string]bool{}
	for _, c := range commands[*instructions.CopyCommand](final) {
		if c.From == "" {
			continue
		}
		for _, src := range c.SourcePaths {
			copied[filepath.Base(src)] = true
		}
	}
	for _, b := range binaries {
		if !built[b] {
			t.Errorf("the build stage's go build does not build ./cmd/%s", b)
		}
		if !copied[b] {
			t.Errorf("the run stage copies no %s from the build stage", b)
		}
	}

	// A numeric user other than root: a name could be root in the base
	// image, and Kubernetes' runAsNonRoot can only check a number.
	users := commands[*instructions.UserCommand](final)
	if len(users) == 0 {
		t.Fatal("the run stage sets no USER: the programs would run as the base image's user")
	}
	user := users[len(users)-1].User
	for _, id := range strings.Split(user, ":") {
		if n, err := strconv.ParseUint(id, 10, 32); err != nil || n == 0 {
			t.Errorf("USER %s: want numeric ids other than 0 (root)", user)
		}
	}

	var exposed []string
	for _, e := range commands[*instructions.ExposeCommand](final) {
		exposed = append(exposed, e.Ports...)
	}
	for _, addr := range []string{server.DefaultGRPCListen, server.DefaultAdminListen} {
		_, port, _ := net.SplitHostPort(addr)
		if !slices.Contains(exposed, port) {
			t.Errorf("EXPOSE %v lacks %s, the port of the director's default %s", exposed, port, addr)
		}
	}
	var volumes []string
	for _, v := range commands[*instructions.VolumeCommand](final) {
		volumes = append(volumes, v.Volumes...)
	}

	// ENTRYPOINT and CMD, in exec form, run the director with flags it
	// takes, its data dir on the volume.
	entry := commands[*instructions.EntrypointCommand](final)
	cmds := commands[*instructions.CmdCommand](final)
	if len(entry) != 1 || len(cmds) != 1 {
		t.Fatalf("the run stage has %d ENTRYPOINT and %d CMD, want one each", len(entry), len(cmds))
	}
	if entry[0].PrependShell || cmds[0].PrependShell {
		t.Error("ENTRYPOINT and CMD must be in exec form (JSON): the image has no shell")
	}
	if want := []string{installedBin + "director"}; !slices.Equal(entry[0].CmdLine, want) {
		t.Errorf("ENTRYPOINT %q, want %q", entry[0].CmdLine, want)
	}
	args := cmds[0].CmdLine
	if i := slices.Index(args, "--data-dir"); i < 0 || i+1 == len(args) || !slices.Contains(volumes, args[i+1]) {
		t.Errorf("CMD %q: want --data-dir on a VOLUME (%v)", args, volumes)
	}
	out, err := exec.Command(filepath.Join(binDir, "director"), append(slices.Clone(args), "--help")...).CombinedOutput()
	if err != nil {
		t.Errorf("director %s --help: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// goModVersion is the version of go.mod's go directive.
func goModVersion(tb testing.TB) string {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		tb.Fatal(err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "go "); ok {
			return strings.TrimSpace(v)
		}
	}
	tb.Fatal("go.mod has no go directive")
	return ""
}

// TestDockerignore keeps the build's inputs in the build context: a
// pattern that leaves out go.mod, go.sum or a folder holding Go code
// breaks the image's build, which CI does not run.
func TestDockerignore(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	needed := []string{"go.mod", "go.sum"}
	entries, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() && e.Name()[0] != '.' && holdsGo(t, filepath.Join(root, e.Name())) {
			needed = append(needed, e.Name())
		}
	}
	if !slices.Contains(needed, "cmd") {
		t.Fatalf("found no Go code under %s/cmd: wrong root?", root)
	}
	for line := range strings.Lines(string(b)) {
		p := strings.TrimSpace(line)
		if p == "" || p[0] == '#' {
			continue
		}
		for _, n := range needed {
			if ok, _ := filepath.Match(strings.TrimPrefix(p, "/"), n); ok {
				t.Errorf(".dockerignore: %q leaves out %s, which the build needs", p, n)
			}
		}
	}
	if !slices.Contains(strings.Fields(string(b)), ".git") {
		t.Error(".dockerignore does not leave out .git")
	}
}

// holdsGo reports whether a .go file is anywhere under dir.
func holdsGo(tb testing.TB, dir string) bool {
	tb.Helper()
	found := false
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(path, ".go") {
			found = true
			return filepath.SkipAll
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return found
}
