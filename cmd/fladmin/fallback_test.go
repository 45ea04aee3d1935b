package main

import (
	"crypto/tls"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/cmd/internal/cli"
	"github.com/fedplane/fedplane/pki"
)

// statusReply is a director's answer to check_status.
var statusReply = ok(map[string]any{"version": "v1", "uptime": "5s", "envoys": 2, "envoysOnline": 1, "jobs": map[string]any{}})

// mustDeadAddr returns a loopback address where nothing listens: a port
// the kernel handed out and that was closed again.
func mustDeadAddr(tb testing.TB) string {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

// startFakeAdminTLS is startFakeAdmin serving TLS with cfg.
func startFakeAdminTLS(tb testing.TB, reply *adminproto.Message, cfg *tls.Config) *fakeAdmin {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	doc, err := adminproto.EncodeMessage(reply)
	if err != nil {
		tb.Fatal(err)
	}
	f := &fakeAdmin{addr: lis.Addr().String(), reply: doc}
	tl := tls.NewListener(lis, cfg)
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go f.serve(c)
		}
	}()
	tb.Cleanup(func() { tl.Close() })
	return f
}

// sent returns the commands f has read so far, and forgets them.
func (f *fakeAdmin) sent() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	got := f.got
	f.got = nil
	return got
}

// port is the port of a loopback address.
func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// TestAddrFallback runs fladmin with the admin ports of two replicas: the
// first dead, then answering, then refusing; the request goes to the
// second only when the first cannot be connected to, and status says which
// answered.
func TestAddrFallback(t *testing.T) {
	refusing := startFakeAdmin(t, &adminproto.Message{Meta: map[string]any{"status": "not_authorized", "info": "bob is a member"}})
	answering := startFakeAdmin(t, statusReply)
	dead := mustDeadAddr(t)
	tests := []struct {
		name       string
		first      *fakeAdmin // nil: dead
		wantCode   int
		wantOut    string // "at" whom status says
		wantStderr string
	}{
		{name: "first dead", wantOut: "second"},
		{name: "first answers", first: answering, wantOut: "first"},
		{name: "first refuses", first: refusing, wantCode: cli.ExitError, wantStderr: "director refused (not_authorized): bob is a member"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			second := startFakeAdmin(t, statusReply)
			first := dead
			if tt.first != nil {
				first = tt.first.addr
				tt.first.sent()
			}
			stdout, stderr, code := runFladmin(t, first+","+second.addr, "status")
			if code != tt.wantCode || !strings.Contains(stderr, tt.wantStderr) {
				t.Fatalf("exit %d, stderr %q; want exit %d and %q", code, stderr, tt.wantCode, tt.wantStderr)
			}
			wantAt := map[string]string{"first": first, "second": second.addr}[tt.wantOut]
			if tt.wantOut != "" && !strings.Contains(stdout, "v1 at "+wantAt+",") {
				t.Fatalf("stdout %q: want the director at %s", stdout, wantAt)
			}
			wantSecond := []string(nil)
			if tt.first == nil {
				wantSecond = []string{"check_status"}
			}
			if got := second.sent(); !slices.Equal(got, wantSecond) {
				t.Fatalf("the second replica got %q, want %q", got, wantSecond)
			}
		})
	}
}

// TestAddrFallbackTLS checks each replica's certificate against the host
// dialled for it: a first replica whose certificate lacks the name dialled
// fails the handshake and is passed over for a second whose certificate
// carries its own; --tls-server-name names one for all.
func TestAddrFallbackTLS(t *testing.T) {
	p := mustTestPKI(t)
	p.Issue(pki.IssueOptions{Kind: pki.KindDirector, Name: "by-name", Hosts: []string{"localhost"}})
	p.Issue(pki.IssueOptions{Kind: pki.KindDirector, Name: "shared", Hosts: []string{"fl.example.org"}})
	byName := p.ServerTLSOf("by-name")
	shared := p.ServerTLSOf("shared")
	tests := []struct {
		name       string
		first      *fakeAdmin // nil: dead
		firstAs    string     // the host the first is dialled as
		second     *fakeAdmin
		flags      []string
		wantCode   int
		wantStderr []string
	}{
		{name: "each its own name", first: startFakeAdminTLS(t, statusReply, byName), firstAs: "127.0.0.1",
			second: startFakeAdminTLS(t, statusReply, byName)},
		{name: "one name for all",
			second: startFakeAdminTLS(t, statusReply, shared), flags: []string{"--tls-server-name", "fl.example.org"}},
		{name: "neither carries its name", first: startFakeAdminTLS(t, statusReply, shared), firstAs: "127.0.0.1",
			second: startFakeAdminTLS(t, statusReply, shared), wantCode: cli.ExitError,
			wantStderr: []string{"TLS certificate problem", "127.0.0.1:", "; localhost:", "does not carry the name dialled"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			first := mustDeadAddr(t)
			if tt.first != nil {
				first = tt.firstAs + ":" + port(tt.first.addr)
			}
			second := "localhost:" + port(tt.second.addr)
			args := append(append(p.flags(), tt.flags...), "status")
			stdout, stderr, code := runFladmin(t, first+","+second, args...)
			if code != tt.wantCode {
				t.Fatalf("exit %d, want %d; stderr %q", code, tt.wantCode, stderr)
			}
			for _, w := range tt.wantStderr {
				if !strings.Contains(stderr, w) {
					t.Fatalf("stderr %q lacks %q", stderr, w)
				}
			}
			if tt.wantCode != 0 {
				return
			}
			var toFirst []string
			if tt.first != nil {
				toFirst = tt.first.sent()
			}
			if toSecond := tt.second.sent(); len(toFirst) != 0 || !slices.Equal(toSecond, []string{"check_status"}) {
				t.Fatalf("requests: %q to the first, %q to the second; want none, then check_status", toFirst, toSecond)
			}
			if !strings.Contains(stdout, "v1 at "+second+",") {
				t.Fatalf("stdout %q: want the director at %s", stdout, second)
			}
		})
	}
}
