package main

import (
	"bufio"
	"crypto/tls"
	"strings"
	"testing"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/cmd/internal/cli"
	"github.com/fedplane/fedplane/pki"
	"github.com/fedplane/fedplane/pki/pkitest"
)

// testPKI is a throwaway federation PKI with an admin's certificate, as
// files for fladmin's --tls-* flags.
type testPKI struct {
	*pkitest.PKI
	server *tls.Config
	admin  string
}

func mustTestPKI(tb testing.TB) *testPKI {
	tb.Helper()
	p := pkitest.New(tb)
	return &testPKI{PKI: p, server: p.ServerTLS(), admin: p.Admin("alice", pki.RoleProjectAdmin)}
}

func (p *testPKI) flags() []string { return p.Flags(p.admin) }

// mustGRPCServer serves a gRPC server without services, as the director's
// gRPC port is to fladmin, with TLS if cfg is set.
func mustGRPCServer(tb testing.TB, cfg *tls.Config) string {
	tb.Helper()
	return pkitest.GRPCServer(tb, cfg, nil)
}

// TestWrongPort points fladmin at servers that are not the admin port it
// can talk to and checks that the error says what answered and what to do.
func TestWrongPort(t *testing.T) {
	p := mustTestPKI(t)
	tests := []struct {
		name string
		addr string
		tls  bool
		want []string
	}{
		{"gRPC port", mustGRPCServer(t, nil), false,
			[]string{"is not an admin port: it speaks HTTP/2", "--admin-listen", "fix --addr"}},
		{"gRPC port with TLS", mustGRPCServer(t, p.server), true,
			[]string{"is not an admin port: it speaks HTTP/2", "--admin-listen"}},
		{"gRPC port without TLS, fladmin with", mustGRPCServer(t, nil), true,
			[]string{"is not an admin port: it speaks HTTP/2", "--admin-listen"}},
		{"TLS client, plaintext admin port", pkitest.AdminPort(t, nil), true,
			[]string{"does not speak TLS and this client does", "leave out --tls-ca, --tls-cert and --tls-key"}},
		{"plaintext client, server sends a TLS alert", pkitest.AlertServer(t), false,
			[]string{"speaks TLS and this client does not", "give --tls-ca, --tls-cert and --tls-key"}},
		{"plaintext client, TLS admin port", pkitest.AdminPort(t, p.server), false,
			[]string{"director closed the connection without replying", "if the director serves TLS, give --tls-ca, --tls-cert and --tls-key"}},
		{"plaintext client, gRPC port with TLS", mustGRPCServer(t, p.server), false,
			[]string{"director closed the connection without replying", "if the director serves TLS, give --tls-ca, --tls-cert and --tls-key"}},
	}
	for _, tt := range tests {
		for _, cmd := range [][]string{{"status"}, {"list-envoys"}, {"download-job", "--dir", t.TempDir(), "0b5a6a7e"}} {
			t.Run(tt.name+"/"+cmd[0], func(t *testing.T) {
				args := cmd
				if tt.tls {
					args = append(p.flags(), cmd...)
				}
				_, stderr, code := runFladminTTY(t, tt.addr, false, args...)
				if code != cli.ExitError {
					t.Fatalf("exit %d, want 1; stderr %q", code, stderr)
				}
				for _, w := range tt.want {
					if !strings.Contains(stderr, w) {
						t.Fatalf("stderr %q lacks %q", stderr, w)
					}
				}
			})
		}
	}
}

// TestRightPortWithTLS checks that offering adminproto.ALPN costs nothing
// with an admin port that serves TLS and selects no protocol.
func TestRightPortWithTLS(t *testing.T) {
	p := mustTestPKI(t)
	lis := pkitest.Listen(t, p.server)
	reply, err := adminproto.EncodeMessage(ok(map[string]any{"version": "v1", "uptime": "1s", "envoys": 0, "envoysOnline": 0}))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := adminproto.ReadMessage(bufio.NewReader(c), adminproto.MaxTextSize); err == nil {
					adminproto.WriteText(c, reply)
				}
			}()
		}
	}()
	out, stderr, code := runFladminTTY(t, lis.Addr().String(), false, append(p.flags(), "status")...)
	if code != 0 || !strings.Contains(out, "v1") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, stderr)
	}
}
