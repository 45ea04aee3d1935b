package admin

import (
	"strings"
	"testing"
	"time"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/pki"
	"github.com/fedplane/fedplane/pki/pkitest"
)

// TestSessions checks a token's life: bound to the caller that logged in,
// ended by logout, by idleness or by age, and the per-caller cap.
func TestSessions(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, clock *time.Time, ss *sessions) (token, caller string)
		want bool
	}{
		{name: "live", want: true, run: func(t *testing.T, clock *time.Time, ss *sessions) (string, string) {
			return mustCreate(t, ss, "alice"), "alice"
		}},
		{name: "another caller", run: func(t *testing.T, clock *time.Time, ss *sessions) (string, string) {
			return mustCreate(t, ss, "alice"), "bob"
		}},
		{name: "logged out", run: func(t *testing.T, clock *time.Time, ss *sessions) (string, string) {
			tok := mustCreate(t, ss, "alice")
			ss.end(tok, "alice")
			return tok, "alice"
		}},
		{name: "logout by another caller ignored", want: true, run: func(t *testing.T, clock *time.Time, ss *sessions) (string, string) {
			tok := mustCreate(t, ss, "alice")
			ss.end(tok, "bob")
			return tok, "alice"
		}},
		{name: "idle", run: func(t *testing.T, clock *time.Time, ss *sessions) (string, string) {
			tok := mustCreate(t, ss, "alice")
			*clock = clock.Add(DefaultSessionIdle)
			return tok, "alice"
		}},
		{name: "busy but old", run: func(t *testing.T, clock *time.Time, ss *sessions) (string, string) {
			tok := mustCreate(t, ss, "alice")
			for range 2 * DefaultSessionMaxAge / DefaultSessionIdle {
				*clock = clock.Add(DefaultSessionIdle / 2)
				ss.use(tok, "alice")
			}
			return tok, "alice"
		}},
		{name: "past the per-caller cap the oldest ends", run: func(t *testing.T, clock *time.Time, ss *sessions) (string, string) {
			first := mustCreate(t, ss, "alice")
			for range DefaultSessionsPerCaller {
				*clock = clock.Add(time.Second)
				mustCreate(t, ss, "alice")
			}
			return first, "alice"
		}},
		{name: "unknown", run: func(t *testing.T, clock *time.Time, ss *sessions) (string, string) {
			return strings.Repeat("0", 2*tokenBytes), "alice"
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
			ss := newSessions(func() time.Time { return clock })
			tok, caller := tt.run(t, &clock, ss)
			if got := ss.use(tok, caller); got != tt.want {
				t.Fatalf("use: got %v, want %v", got, tt.want)
			}
		})
	}
}

func mustCreate(tb testing.TB, ss *sessions, caller string) string {
	tb.Helper()
	tok, err := ss.create(caller)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := parseToken(tok); err != nil {
		tb.Fatalf("create made a token parseToken refuses: %v", err)
	}
	return tok
}

// TestTokenBoundToCertificate: a token works only with the certificate
// that logged in, and a login must name the certificate's own user.
func TestTokenBoundToCertificate(t *testing.T) {
	p := pkitest.New(t)
	p.Admin("alice", pki.RoleProjectAdmin)
	p.Admin("bob", pki.RoleProjectAdmin)
	p.Envoy("env_one")
	d := mustNew(t, testCfg(t, newFakeClock()))
	c, _ := mustServeAdmin(t, d, Config{TLS: p.ServerTLS()})
	as := func(name string) *flareClient {
		cfg := p.ClientTLS(name)
		cfg.NextProtos = nil
		return &flareClient{tb: t, addr: c.Addr, cfg: cfg}
	}
	login := flareParse(t, as("alice").exchange(flareText(flareRequest("_cert_login alice", ""))))
	token := items(login)[1]["data"].(string)

	tests := []struct {
		name, who, command, token string
		wantStatus                string
		wantFirst                 string // the first item's data
	}{
		{name: "own token", who: "alice", command: "list_jobs", token: token, wantStatus: adminproto.StatusOK},
		{name: "no token: the certificate suffices", who: "bob", command: "list_jobs", wantStatus: adminproto.StatusOK},
		{name: "another's token", who: "bob", command: "list_jobs", token: token, wantStatus: adminproto.StatusNotAuthenticated},
		{name: "malformed token", who: "alice", command: "list_jobs", token: "x'; drop", wantStatus: adminproto.StatusNotAuthenticated},
		{name: "login as another user", who: "bob", command: "_cert_login alice", wantStatus: adminproto.StatusNotAuthenticated, wantFirst: loginReject},
		{name: "login with an envoy certificate", who: "env_one", command: "_cert_login env_one", wantStatus: adminproto.StatusNotAuthorized, wantFirst: loginReject},
		{name: "login without a user", who: "alice", command: "_cert_login", wantStatus: adminproto.StatusSyntaxError, wantFirst: loginReject},
		{name: "wrong scope", who: "alice", command: "training.list_jobs", wantStatus: adminproto.StatusSyntaxError},
		{name: "unknown scope", who: "alice", command: "nope.list_jobs", wantStatus: adminproto.StatusSyntaxError},
		{name: "bare name", who: "alice", command: "check_status", wantStatus: adminproto.StatusOK},
		{name: "scoped name", who: "alice", command: "training.check_status server", wantStatus: adminproto.StatusOK},
		{name: "submit with a folder that is a path", who: "alice", command: "job_mgmt.submit_job ../x", wantStatus: adminproto.StatusSyntaxError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var req []byte
			if strings.Contains(tt.command, "submit_job") {
				req = flareBinary(flareRequest(tt.command, tt.token), []byte("PK"))
			} else {
				req = flareText(flareRequest(tt.command, tt.token))
			}
			docs := flareParse(t, as(tt.who).exchange(req))
			if st := meta(docs)["status"]; st != tt.wantStatus {
				t.Fatalf("status %v (%v), want %s", st, meta(docs)["info"], tt.wantStatus)
			}
			if tt.wantFirst != "" && items(docs)[0]["data"] != tt.wantFirst {
				t.Fatalf("first item %v, want %q", items(docs)[0], tt.wantFirst)
			}
		})
	}
}

func FuzzParseToken(f *testing.F) {
	for _, s := range []string{strings.Repeat("ab", tokenBytes), strings.Repeat("AB", tokenBytes), "", "x", strings.Repeat("0", 2*tokenBytes+1)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := parseToken(s)
		if err != nil {
			return
		}
		if tok != s || len(tok) != 2*tokenBytes || strings.Trim(tok, "0123456789abcdef") != "" {
			t.Fatalf("parseToken(%q) accepted %q", s, tok)
		}
	})
}
