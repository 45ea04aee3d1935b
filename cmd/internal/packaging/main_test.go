package packaging

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// root is the repository's root, from this package's folder.
const root = "../../.."

// binaries are the programs the Makefile builds (BINARIES) and the image
// ships; TestMakefileBinaries keeps the two lists one.
var binaries = []string{"director", "envoy", "fladmin"}

// binDir holds the binaries TestMain builds as the Dockerfile does:
// CGO_ENABLED=0, so static.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "fedplane-packaging-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	for _, b := range binaries {
		args = append(args, "github.com/fedplane/fedplane/cmd/"+b)
	}
	cmd := exec.Command("go", args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "build binaries with CGO_ENABLED=0: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// needTool returns the path of a program a test needs, skipping the test
// where it is missing, except under CI (CI=true), where a missing tool
// fails the test: a check that CI skips is a check nobody runs.
func needTool(tb testing.TB, name string) string {
	tb.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	if os.Getenv("CI") == "true" {
		tb.Fatalf("%s is missing, and CI must run this test: %v", name, err)
	}
	tb.Skipf("%s is not installed: %v", name, err)
	return ""
}
