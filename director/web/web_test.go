package web

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/director"
	"github.com/fedplane/fedplane/director/directortest"
	"github.com/fedplane/fedplane/pki"
	"github.com/fedplane/fedplane/pki/pkitest"
	"github.com/fedplane/fedplane/store"
)

// console is a Server over a test director on its settable clock, served
// in the clear by httptest.
type console struct {
	s     *Server
	d     *director.Director
	clock *directortest.Clock
	url   string
}

func newConsole(t *testing.T, cfg Config) *console {
	t.Helper()
	clock := directortest.NewClock()
	d := directortest.New(t, directortest.Config(t, clock))
	ts := httptest.NewUnstartedServer(nil)
	cfg.BaseURL = "http://" + ts.Listener.Addr().String()
	s := New(d, cfg)
	ts.Config.Handler = s
	ts.Start()
	t.Cleanup(ts.Close)
	return &console{s: s, d: d, clock: clock, url: cfg.BaseURL}
}

// client is a browser: it keeps cookies and does not follow redirects.
func client(t *testing.T, tlsCfg *tls.Config) *http.Client {
	t.Helper()
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{
		Jar:           jar,
		Transport:     &http.Transport{TLSClientConfig: tlsCfg},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       10 * time.Second,
	}
}

// fetch does method on url and returns the status, headers and body.
func fetch(t *testing.T, c *http.Client, method, url string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

var (
	boss   = director.Caller{Name: "boss", Org: "hq", Kind: pki.KindAdmin, Role: pki.RoleProjectAdmin}
	viewer = director.Caller{Name: "viewer", Org: "hq", Kind: pki.KindAdmin, Role: pki.RoleMember}
)

// TestLoginAndSessions walks what a browser without a certificate meets:
// nothing without a session, a link that works once and only for 5
// minutes, a session that works as its admin's role for 12 hours.
func TestLoginAndSessions(t *testing.T) {
	type step struct {
		path       string
		wantStatus int
		wantBody   string
	}
	tests := []struct {
		name   string
		caller *director.Caller // a login link is issued for it, unless nil
		before time.Duration    // the clock moves on before the link is used
		steps  []step
	}{
		{name: "no credentials", steps: []step{
			{"/", http.StatusUnauthorized, "Run fladmin console for a new link"},
			{"/api/jobs", http.StatusUnauthorized, "run fladmin console"},
			{"/api/envoys", http.StatusUnauthorized, "no admin certificate and no session"},
			{"/api/events", http.StatusUnauthorized, "no admin certificate"},
			{"/app.css", http.StatusOK, "system-ui"}, // no data in it: the login page uses it
		}},
		{name: "unknown token", steps: []step{
			{"/login?token=nope", http.StatusUnauthorized, "Run fladmin console for a new link"},
		}},
		{name: "token once", caller: &boss, steps: []step{
			{"LOGIN", http.StatusSeeOther, ""},
			{"/", http.StatusOK, `src="/app.js"`},
			{"/api/whoami", http.StatusOK, `"role":"project_admin"`},
			{"/api/jobs", http.StatusOK, `"jobs":[]`},
			{"LOGIN", http.StatusUnauthorized, "Run fladmin console for a new link"},
		}},
		{name: "expired token", caller: &boss, before: TokenTTL + time.Second, steps: []step{
			{"LOGIN", http.StatusUnauthorized, "Run fladmin console for a new link"},
			{"/api/jobs", http.StatusUnauthorized, ""},
		}},
		{name: "member views", caller: &viewer, steps: []step{
			{"LOGIN", http.StatusSeeOther, ""},
			{"/api/whoami", http.StatusOK, `"name":"viewer","org":"hq","kind":"admin","role":"member"`},
			{"/api/envoys", http.StatusOK, `"total":0`},
			{"/api/jobs/0123456789abcdef", http.StatusNotFound, "no job with id"},
			{"/api/jobs/not-a-job-id!", http.StatusBadRequest, "want a job id"},
			{"/api/nothing", http.StatusNotFound, "no such API"},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newConsole(t, Config{})
			var link string
			if tt.caller != nil {
				var err error
				if link, _, err = c.s.Login(*tt.caller); err != nil {
					t.Fatal(err)
				}
				if !strings.HasPrefix(link, c.url+"/login?token=") {
					t.Fatalf("login link %q: want it under %s", link, c.url)
				}
			}
			c.clock.Add(tt.before)
			b := client(t, nil)
			for _, st := range tt.steps {
				url := c.url + st.path
				if st.path == "LOGIN" {
					url = link
				}
				status, h, body := fetch(t, b, http.MethodGet, url)
				if status != st.wantStatus || !strings.Contains(body, st.wantBody) {
					t.Fatalf("GET %s: got %d %q, want %d with %q", st.path, status, body, st.wantStatus, st.wantBody)
				}
				if h.Get("Content-Security-Policy") != securityHeaders["Content-Security-Policy"] || h.Get("X-Content-Type-Options") != "nosniff" {
					t.Fatalf("GET %s: security headers missing: %v", st.path, h)
				}
				if strings.HasPrefix(st.path, "/api/") || st.path == "LOGIN" || st.path == "/" {
					if h.Get("Cache-Control") != "no-store" {
						t.Fatalf("GET %s: Cache-Control %q, want no-store", st.path, h.Get("Cache-Control"))
					}
				}
				if st.path == "LOGIN" && status == http.StatusSeeOther {
					ck := h.Get("Set-Cookie")
					for _, want := range []string{sessionCookie + "=", "HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"} {
						if !strings.Contains(ck, want) {
							t.Fatalf("session cookie %q lacks %q", ck, want)
						}
					}
					if h.Get("Location") != "/" {
						t.Fatalf("login redirects to %q, want /", h.Get("Location"))
					}
				}
			}
		})
	}
}

// TestSessionExpires: a session ends 12 hours after its login.
func TestSessionExpires(t *testing.T) {
	c := newConsole(t, Config{})
	link, _, err := c.s.Login(viewer)
	if err != nil {
		t.Fatal(err)
	}
	b := client(t, nil)
	if status, _, _ := fetch(t, b, http.MethodGet, link); status != http.StatusSeeOther {
		t.Fatalf("login: %d", status)
	}
	c.clock.Add(SessionTTL - time.Minute)
	if status, _, body := fetch(t, b, http.MethodGet, c.url+"/api/jobs"); status != http.StatusOK {
		t.Fatalf("before the end: %d %s", status, body)
	}
	c.clock.Add(2 * time.Minute)
	if status, _, body := fetch(t, b, http.MethodGet, c.url+"/api/jobs"); status != http.StatusUnauthorized {
		t.Fatalf("after the end: %d %s, want 401", status, body)
	}
}

// TestReadOnly: anything but GET is refused, before any identity check.
func TestReadOnly(t *testing.T) {
	c := newConsole(t, Config{})
	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch, http.MethodHead, http.MethodOptions} {
		for _, path := range []string{"/", "/api/jobs", "/login?token=x"} {
			status, h, _ := fetch(t, client(t, nil), method, c.url+path)
			if status != http.StatusMethodNotAllowed || h.Get("Allow") != http.MethodGet {
				t.Errorf("%s %s: got %d (Allow %q), want 405 with Allow: GET", method, path, status, h.Get("Allow"))
			}
		}
	}
}

// TestLoginsAudited: logins that worked and those refused are in the
// audit trail with the browser's address, as are refused API requests.
func TestLoginsAudited(t *testing.T) {
	c := newConsole(t, Config{})
	link, _, err := c.s.Login(boss)
	if err != nil {
		t.Fatal(err)
	}
	b := client(t, nil)
	fetch(t, b, http.MethodGet, link)
	fetch(t, b, http.MethodGet, link) // spent
	fetch(t, client(t, nil), http.MethodGet, c.url+"/api/jobs")
	fetch(t, b, http.MethodGet, c.url+"/api/jobs") // allowed: not recorded
	c.d.FlushJournal()
	trail, err := c.d.Audit(context.Background(), store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range trail {
		if a.Channel != api.AuditWeb || a.Remote != "127.0.0.1" {
			t.Fatalf("audit record %+v: want channel web and the remote address", a)
		}
		got = append(got, a.Caller+" "+a.Action+" "+a.Outcome)
	}
	want := "boss login ok|anonymous login 401 Unauthorized|anonymous /api/jobs 401 Unauthorized"
	if strings.Join(got, "|") != want {
		t.Fatalf("audit trail:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.ReplaceAll(want, "|", "\n"))
	}
}

// TestCertificates serves the console with TLS: an admin certificate is
// its own login, with its role; an envoy's is refused; a browser without
// one needs a link, and its session cookie is Secure.
func TestCertificates(t *testing.T) {
	p := pkitest.New(t)
	p.Admin("boss", pki.RoleProjectAdmin)
	p.Admin("viewer", pki.RoleMember)
	p.Envoy("site-a")
	clock := directortest.NewClock()
	d := directortest.New(t, directortest.Config(t, clock))
	lis := pkitest.Listen(t, nil)
	url := "https://" + lis.Addr().String()
	s := New(d, Config{TLS: p.ServerTLS(), BaseURL: url})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, lis) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	noCert := &tls.Config{RootCAs: p.Roots()}
	tests := []struct {
		name       string
		tls        *tls.Config
		path       string
		wantStatus int
		wantBody   string
	}{
		{"project admin", p.ClientTLS("boss"), "/api/whoami", http.StatusOK, `"name":"boss","kind":"admin","role":"project_admin"`},
		{"project admin's page", p.ClientTLS("boss"), "/", http.StatusOK, `src="/app.js"`},
		{"member", p.ClientTLS("viewer"), "/api/jobs", http.StatusOK, `"jobs":[]`},
		{"envoy's page", p.ClientTLS("site-a"), "/", http.StatusForbidden, "has no admin role"},
		{"envoy's API call", p.ClientTLS("site-a"), "/api/envoys", http.StatusForbidden, "the console is for admin certificates"},
		{"envoy's events", p.ClientTLS("site-a"), "/api/events", http.StatusForbidden, "has no admin role"},
		{"no certificate", noCert, "/", http.StatusUnauthorized, "Run fladmin console"},
		{"no certificate, API", noCert, "/api/jobs", http.StatusUnauthorized, "no admin certificate and no session"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, body := fetch(t, client(t, tt.tls), http.MethodGet, url+tt.path)
			if status != tt.wantStatus || !strings.Contains(body, tt.wantBody) {
				t.Fatalf("GET %s: got %d %q, want %d with %q", tt.path, status, body, tt.wantStatus, tt.wantBody)
			}
		})
	}
	t.Run("link without certificate", func(t *testing.T) {
		link, _, err := s.Login(viewer)
		if err != nil {
			t.Fatal(err)
		}
		b := client(t, noCert)
		status, h, _ := fetch(t, b, http.MethodGet, link)
		if status != http.StatusSeeOther || !strings.Contains(h.Get("Set-Cookie"), "Secure") {
			t.Fatalf("login: %d, cookie %q: want 303 and a Secure cookie", status, h.Get("Set-Cookie"))
		}
		if status, _, body := fetch(t, b, http.MethodGet, url+"/api/whoami"); status != http.StatusOK || !strings.Contains(body, `"role":"member"`) {
			t.Fatalf("whoami: %d %s", status, body)
		}
	})
}

// externalURL matches a URL that would make the browser fetch from
// elsewhere: with a scheme, or protocol-relative ("//host.example").
var externalURL = regexp.MustCompile(`(?i)(https?:|wss?:|ftp:)//|//[a-z0-9-]+(\.[a-z0-9-]+)+`)

// TestNoExternalURL: the embedded files load nothing from outside the
// binary.
func TestNoExternalURL(t *testing.T) {
	entries, err := assets.ReadDir("static")
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) < 3 {
		t.Fatalf("embedded only %d files", len(entries))
	}
	for _, e := range entries {
		b, err := assets.ReadFile("static/" + e.Name())
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(b), "\n") {
			if m := externalURL.FindString(line); m != "" {
				t.Errorf("%s:%d: external URL %q: the console must work without any resource from outside the binary", e.Name(), i+1, m)
			}
		}
	}
	// The pattern finds what it is there for.
	for _, bad := range []string{`<script src="https://cdn.example.org/x.js">`, `url(//fonts.example.com/a.woff)`, `fetch("http://10.0.0.1/")`} {
		if !externalURL.MatchString(bad) {
			t.Errorf("the pattern misses %q", bad)
		}
	}
}

// sse reads a Server-Sent Events stream.
type sse struct {
	body io.ReadCloser
	r    *bufio.Reader
}

func openEvents(t *testing.T, c *http.Client, url, lastID string) (*sse, int) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode == http.StatusOK && resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("content type %q", resp.Header.Get("Content-Type"))
	}
	return &sse{body: resp.Body, r: bufio.NewReader(resp.Body)}, resp.StatusCode
}

// next returns the next event's id and data, skipping comments and the
// retry field; io.EOF when the stream ends.
func (s *sse) next() (id string, e api.Event, err error) {
	var data string
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return "", e, err
		}
		line = strings.TrimRight(line, "\n")
		switch {
		case line == "" && data != "":
			return id, e, json.Unmarshal([]byte(data), &e)
		case strings.HasPrefix(line, "id: "):
			id = strings.TrimPrefix(line, "id: ")
		case strings.HasPrefix(line, "data: "):
			data = strings.TrimPrefix(line, "data: ")
		}
	}
}

func register(t *testing.T, d *director.Director, name string) {
	t.Helper()
	refused, err := d.RegisterEnvoy(context.Background(), store.Envoy{Name: name, NSamples: 10,
		SampleShape: []string{"28", "28"}, TargetShape: []string{"1"}})
	if err != nil || refused != "" {
		t.Fatalf("register %s: %v %s", name, err, refused)
	}
}

// TestEvents: a stream delivers what happens after it connects, resumes
// after Last-Event-ID as a reconnecting browser asks, is capped per
// caller, and ends when the director drains.
func TestEvents(t *testing.T) {
	c := newConsole(t, Config{MaxStreamsPerCaller: 2})
	link, _, err := c.s.Login(viewer)
	if err != nil {
		t.Fatal(err)
	}
	b := client(t, nil)
	b.Timeout = 0 // streams
	fetch(t, b, http.MethodGet, link)

	live, status := openEvents(t, b, c.url+"/api/events", "")
	if status != http.StatusOK {
		t.Fatalf("events: %d", status)
	}
	register(t, c.d, "site-a")
	register(t, c.d, "site-b")
	id, e, err := live.next()
	if err != nil || e.Kind != api.EventEnvoyRegistered || e.Envoy != "site-a" || id == "" {
		t.Fatalf("first event: id %q %+v %v, want site-a's registration", id, e, err)
	}
	id2, e2, err := live.next()
	if err != nil || e2.Envoy != "site-b" {
		t.Fatalf("second event: %+v %v", e2, err)
	}

	// A reconnect after the first event gets the second again.
	resumed, status := openEvents(t, b, c.url+"/api/events?after=0", id)
	if status != http.StatusOK {
		t.Fatalf("resume: %d", status)
	}
	if rid, re, err := resumed.next(); err != nil || rid != id2 || re.Envoy != "site-b" {
		t.Fatalf("resumed after %s: id %q %+v %v, want %s (site-b)", id, rid, re, err, id2)
	}
	// Two streams are open: a third is refused.
	if _, status := openEvents(t, b, c.url+"/api/events", ""); status != http.StatusServiceUnavailable {
		t.Fatalf("third stream: %d, want 503", status)
	}
	if _, status := openEvents(t, b, c.url+"/api/events?after=x", ""); status != http.StatusBadRequest {
		t.Fatalf("after=x: %d, want 400", status)
	}

	c.d.Drain()
	for _, s := range []*sse{live, resumed} {
		if _, _, err := s.next(); err != io.EOF {
			t.Fatalf("after the drain: %v, want the stream to end", err)
		}
	}
}

// TestGrantsCapped: a flood of logins keeps at most the cap, dropping the
// oldest.
func TestGrantsCapped(t *testing.T) {
	clock := directortest.NewClock()
	l := newLogins(clock.Now)
	first, _ := l.issue(boss)
	clock.Add(time.Millisecond)
	for range MaxTokens {
		l.issue(viewer)
		clock.Add(time.Millisecond)
	}
	if n := len(l.tokens.m); n != MaxTokens {
		t.Fatalf("%d tokens kept, want %d", n, MaxTokens)
	}
	if _, _, _, ok := l.redeem(first); ok {
		t.Fatalf("the oldest token survived the flood")
	}
}
