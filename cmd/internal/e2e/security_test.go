package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/cmd/internal/proctest"
)

// pki runs `director pki` and fails the test on an error.
func pki(tb testing.TB, args ...string) {
	tb.Helper()
	if r := run(tb, "director", append([]string{"pki"}, args...)...); r.code != 0 {
		tb.Fatalf("director pki %v: exit %d: %s %s", args, r.code, r.stdout, r.stderr)
	}
}

// federationPKI makes a CA with a director, two envoys and four admins,
// and a foreign CA with one envoy.
func federationPKI(tb testing.TB) (dir, foreign string) {
	tb.Helper()
	dir, foreign = tb.TempDir(), tb.TempDir()
	pki(tb, "init", "--dir", dir)
	pki(tb, "issue", "--dir", dir, "--kind", "director", "--name", "director", "--host", "127.0.0.1")
	for _, e := range []string{"site-a", "site-b"} {
		pki(tb, "issue", "--dir", dir, "--kind", "envoy", "--name", e)
	}
	for name, role := range map[string]string{"boss": "project_admin", "lead1": "lead", "lead2": "lead", "viewer": "member"} {
		pki(tb, "issue", "--dir", dir, "--kind", "admin", "--name", name, "--role", role, "--org", "org-"+name)
	}
	pki(tb, "init", "--dir", foreign)
	pki(tb, "issue", "--dir", foreign, "--kind", "admin", "--name", "boss", "--role", "project_admin")
	pki(tb, "issue", "--dir", foreign, "--kind", "envoy", "--name", "site-a")
	return dir, foreign
}

func tlsArgs(dir, name string) []string {
	return []string{"--tls-ca", filepath.Join(dir, "ca.crt"), "--tls-cert", filepath.Join(dir, name+".crt"), "--tls-key", filepath.Join(dir, name+".key")}
}

// grpcAs dials the director's gRPC port with name's certificate from dir
// (dir "" dials in plaintext).
func grpcAs(tb testing.TB, addr, dir, name string) directorpb.DirectorClient {
	tb.Helper()
	creds := insecure.NewCredentials()
	if dir != "" {
		pair, err := tls.LoadX509KeyPair(filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"))
		if err != nil {
			tb.Fatal(err)
		}
		ca, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(ca)
		// Trust the federation's CA even for a foreign client: the refusal
		// tested is the director's, of the client's certificate.
		if own, err := os.ReadFile(filepath.Join(filepath.Dir(dir), "fed", "ca.crt")); err == nil {
			pool.AppendCertsFromPEM(own)
		}
		creds = credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: pool, MinVersion: tls.VersionTLS12})
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return directorpb.NewDirectorClient(conn)
}

func TestMutualTLSAndRoles(t *testing.T) {
	root := t.TempDir()
	fed, foreign := filepath.Join(root, "fed"), filepath.Join(root, "foreign")
	src, fsrc := federationPKI(t)
	os.Rename(src, fed)
	os.Rename(fsrc, foreign)

	d := startDirectorAdmin(t, t.TempDir(), append([]string{"--health-check-period", "300ms", "--offline-after", "1500ms"}, tlsArgs(fed, "director")...)...)
	admin := func(name string, args ...string) result {
		return fladmin(t, d.admin, append(tlsArgs(fed, name), args...)...)
	}
	if r := admin("boss", "status"); r.code != 0 {
		t.Fatalf("status over mutual TLS: exit %d: %s", r.code, r.stderr)
	}

	// Plaintext and foreign-CA clients are refused on both ports.
	if r := fladmin(t, d.admin, "status"); r.code != 1 {
		t.Fatalf("plaintext fladmin: exit %d, stdout %q", r.code, r.stdout)
	}
	if r := fladmin(t, d.admin, append(tlsArgs(foreign, "boss"), "status")...); r.code != 1 {
		t.Fatalf("foreign-CA fladmin: exit %d, stdout %q", r.code, r.stdout)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := grpcAs(t, d.grpc, "", "").GetDatasetInfo(ctx, &directorpb.GetDatasetInfoRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("plaintext gRPC: got %v, want Unavailable", err)
	}
	if _, err := grpcAs(t, d.grpc, foreign, "site-a").GetDatasetInfo(ctx, &directorpb.GetDatasetInfoRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("foreign-CA gRPC: got %v, want Unavailable", err)
	}

	// An envoy cannot act as another: site-b's certificate registering site-a.
	asB := grpcAs(t, d.grpc, fed, "site-b")
	_, err := asB.UpdateShardInfo(ctx, &directorpb.UpdateShardInfoRequest{ShardInfo: &directorpb.ShardInfo{NodeInfo: &directorpb.NodeInfo{Name: "site-a"}}})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), `"site-b"`) {
		t.Fatalf("CN mismatch: got %v, want PermissionDenied naming the CN", err)
	}
	// An admin certificate is not an envoy's.
	_, err = grpcAs(t, d.grpc, fed, "boss").UpdateEnvoyStatus(ctx, &directorpb.UpdateEnvoyStatusRequest{Name: "boss"})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("admin certificate as an envoy: got %v, want PermissionDenied", err)
	}

	// A real envoy with its certificate joins.
	start(t, "envoy", append([]string{"start", "--allow-root", "--name", "site-a", "--director", d.grpc, "--shard-dir", makeShard(t, 1, 10),
		"--samples", "10", "--work-dir", filepath.Join(t.TempDir(), "w")}, tlsArgs(fed, "site-a")...)...)
	eventually(t, 60*time.Second, "envoy online over mTLS", func() bool {
		r := admin("viewer", "-o", "json", "list-envoys")
		return r.code == 0 && strings.Contains(r.stdout, `"online": true`)
	})

	// Roles: a member only views; a lead manages only its own jobs.
	job := trainJob(t, "roles", `"envoys": ["site-a"]`, 1, "sleep", "10m")
	if r := admin("viewer", "submit-job", job); r.code != 1 || !strings.Contains(r.stderr, "not_authorized") {
		t.Fatalf("member submit: exit %d, stderr %q", r.code, r.stderr)
	}
	r := admin("lead1", "submit-job", job)
	if r.code != 0 {
		t.Fatalf("lead submit: exit %d: %s", r.code, r.stderr)
	}
	id := strings.TrimSpace(strings.TrimPrefix(r.stdout, "Submitted job "))
	show := admin("lead2", "-o", "json", "show-job", id)
	if show.code != 0 || !strings.Contains(show.stdout, `"submitter": "lead1"`) || !strings.Contains(show.stdout, `"submitterOrg": "org-lead1"`) {
		t.Fatalf("another lead views the job with its submitter: exit %d %s %s", show.code, show.stdout, show.stderr)
	}
	if r := admin("lead2", "abort-job", id); r.code != 1 || !strings.Contains(r.stderr, "not_authorized") {
		t.Fatalf("lead2 aborting lead1's job: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := admin("viewer", "abort-job", id); r.code != 1 || !strings.Contains(r.stderr, "not_authorized") {
		t.Fatalf("member aborting: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := admin("lead1", "abort-job", id); r.code != 0 {
		t.Fatalf("lead1 aborting its own job: exit %d, stderr %q", r.code, r.stderr)
	}
	if r := admin("boss", "delete-job", id); r.code != 0 {
		t.Fatalf("project_admin deleting: exit %d, stderr %q", r.code, r.stderr)
	}
	// An envoy's certificate has no admin role.
	if r := admin("site-a", "status"); r.code != 1 || !strings.Contains(r.stderr, "not_authorized") {
		t.Fatalf("envoy certificate on the admin port: exit %d, stderr %q", r.code, r.stderr)
	}
}

func TestNonLoopbackNeedsTLS(t *testing.T) {
	r := run(t, "director", "serve", "--data-dir", t.TempDir(), "--grpc-listen", "0.0.0.0:0", "--admin-listen", "127.0.0.1:0")
	if r.code == 0 || !strings.Contains(r.stderr, "not a loopback address") || !strings.Contains(r.stderr, "--insecure") {
		t.Fatalf("non-loopback without TLS: exit %d, stderr %q", r.code, r.stderr)
	}
	p, _ := proctest.StartDirector(t, filepath.Join(binDir, "director"),
		"serve", "--data-dir", t.TempDir(), "--grpc-listen", "0.0.0.0:0", "--admin-listen", anyPort, "--insecure")
	if _, err := p.Stop(t, 10*time.Second); err != nil {
		t.Fatalf("stop: %v", err)
	}
}
