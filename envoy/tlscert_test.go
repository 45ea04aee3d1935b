package envoy

import (
	"crypto/tls"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/fedplane/fedplane/pki"
	"github.com/fedplane/fedplane/pki/pkitest"
)

// TestRunLogsCertificateProblems starts envoys against directors whose
// certificates fail the envoy's checks: each retry says which check
// failed, at once and again, and never that the director is unreachable.
func TestRunLogsCertificateProblems(t *testing.T) {
	p := pkitest.New(t)
	p.Issue(pki.IssueOptions{Kind: pki.KindDirector, Name: "elsewhere", Hosts: []string{"fl.example.org"}})
	foreign := pkitest.New(t)
	client := p.ClientTLS(p.Envoy("site-1"))
	tests := []struct {
		name   string
		server *tls.Config
		want   string
	}{
		{"another CA", foreign.ServerTLS(), "not signed by the CA in --tls-ca"},
		{"name not covered", p.ServerTLSOf("elsewhere"), "does not carry the name dialled"},
		{"expired", p.ExpiredServerTLS(), "has expired or is not yet valid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs syncBuffer
			e, err := New(Config{
				Name:        "site-1",
				Directors:   []string{mustGRPCDirector(t, tt.server)},
				ShardDir:    t.TempDir(),
				WorkDir:     filepath.Join(t.TempDir(), "work"),
				DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(client.Clone()))},
				AllowRoot:   true, // tests run as root on CI
				Logger:      slog.New(slog.NewTextHandler(&logs, nil)),
			})
			if err != nil {
				t.Fatal(err)
			}
			stop, _ := startRun(t, e)
			defer func() {
				if t.Failed() {
					t.Log(logs.String())
				}
			}()
			eventually(t, "two retries naming the problem", func() bool {
				return strings.Count(logs.String(), "TLS certificate problem; retrying") >= 2
			})
			if err := stop(); err != nil {
				t.Fatalf("Run = %v, want nil after cancel", err)
			}
			out := logs.String()
			if strings.Count(out, tt.want) < 2 || strings.Contains(out, "unreachable") {
				t.Fatalf("want %q on every retry and no \"unreachable\"; logs:\n%s", tt.want, out)
			}
		})
	}
}
