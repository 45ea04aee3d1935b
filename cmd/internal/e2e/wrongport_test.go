package e2e

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestWrongPorts points fladmin at the director's gRPC port and an envoy at
// its admin port, as users do by mistake, and checks that each says so.
func TestWrongPorts(t *testing.T) {
	d := startDirectorAdmin(t, t.TempDir())

	r := fladmin(t, d.grpc, "status")
	if r.code != 1 || !strings.Contains(r.stderr, "is not an admin port: it speaks HTTP/2") || !strings.Contains(r.stderr, "--admin-listen") {
		t.Fatalf("fladmin on the gRPC port: exit %d, stderr %q", r.code, r.stderr)
	}

	e := start(t, "envoy", "start", "--allow-root", "--name", "site-a", "--director", d.admin, "--shard-dir", t.TempDir(),
		"--samples", "10", "--work-dir", filepath.Join(t.TempDir(), "work"))
	eventually(t, 30*time.Second, "the envoy's hint", func() bool {
		out := e.Log.String()
		// The admin port answers a gRPC client with a status that says
		// where to point it; an envoy's own hint covers ports that cannot.
		return strings.Contains(out, "director unreachable; retrying") &&
			(strings.Contains(out, "point envoys and frontends at the director's gRPC port") || strings.Contains(out, "point --director at its gRPC port"))
	})
}
