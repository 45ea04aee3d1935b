package main

import (
	"strings"
	"testing"

	"github.com/fedplane/fedplane/pki"
	"github.com/fedplane/fedplane/pki/pkitest"
)

// TestTLSCertificateProblems points fladmin at admin ports whose
// certificates fail its checks, or that refuse its own, and checks that
// the error names the problem and what to check, never "unreachable".
func TestTLSCertificateProblems(t *testing.T) {
	p := mustTestPKI(t)
	p.Issue(pki.IssueOptions{Kind: pki.KindDirector, Name: "elsewhere", Hosts: []string{"fl.example.org"}})
	foreign := pkitest.New(t)

	tests := []struct {
		name  string
		addr  string
		flags []string
		want  []string // in stderr; none means no TLS problem
	}{
		{name: "another CA", addr: pkitest.AdminPort(t, foreign.ServerTLS()), flags: p.flags(),
			want: []string{"TLS certificate problem", "not signed by the CA in --tls-ca"}},
		{name: "name not covered", addr: pkitest.AdminPort(t, p.ServerTLSOf("elsewhere")), flags: p.flags(),
			want: []string{"TLS certificate problem", "does not carry the name dialled", "fl.example.org", "--tls-server-name", "--host"}},
		{name: "name given", addr: pkitest.AdminPort(t, p.ServerTLSOf("elsewhere")), flags: append(p.flags(), "--tls-server-name", "fl.example.org")},
		{name: "expired", addr: pkitest.AdminPort(t, p.ExpiredServerTLS()), flags: p.flags(),
			want: []string{"TLS certificate problem", "has expired or is not yet valid"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, stderr, code := runFladmin(t, tt.addr, append(tt.flags, "status")...)
			if code != 1 {
				t.Fatalf("exit %d, want 1: %s", code, stderr)
			}
			if len(tt.want) == 0 {
				// Past the handshake: pkitest.AdminPort's error reply.
				if strings.Contains(stderr, "TLS certificate problem") || !strings.Contains(stderr, "director refused") {
					t.Fatalf("stderr %q: want the admin port's reply", stderr)
				}
				return
			}
			for _, w := range tt.want {
				if !strings.Contains(stderr, w) {
					t.Fatalf("stderr %q lacks %q", stderr, w)
				}
			}
			if strings.Contains(stderr, "unreachable") {
				t.Fatalf("stderr %q says unreachable", stderr)
			}
		})
	}
	// --tls-server-name alone is a usage error.
	if _, stderr, code := runFladmin(t, "127.0.0.1:1", "--tls-server-name", "x", "status"); code != 2 || !strings.Contains(stderr, "--tls-server-name needs") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}
