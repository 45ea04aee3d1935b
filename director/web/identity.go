package web

import (
	"errors"
	"fmt"
	"html"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/director"
	"github.com/fedplane/fedplane/pki"
)

// sessionCookie names the console's session cookie.
const sessionCookie = "fedplane_session"

// errNoCaller is a request with neither a certificate nor a session.
var errNoCaller = fmt.Errorf("%w: no admin certificate and no session: run fladmin console for a login link", api.ErrUnauthenticated)

// caller is who makes r: the verified client certificate, with TLS, or
// the session its cookie names. A certificate that is not an admin's (an
// envoy's) is refused whatever cookie comes with it: it is
// api.ErrNotAllowed, no credentials at all errNoCaller.
func (s *Server) caller(r *http.Request) (director.Caller, error) {
	if r.TLS != nil {
		if id, ok := pki.FromConnState(*r.TLS); ok {
			c := director.Caller{Name: id.Name, Org: id.Org, Kind: id.Kind, Role: id.Role}
			if !pki.IsAdminRole(id.Role) {
				return c, fmt.Errorf("%w: %s's certificate (%s) has no admin role: the console is for admin certificates",
					api.ErrNotAllowed, id.Name, kindOf(id.Kind))
			}
			return c, nil
		}
	}
	if ck, err := r.Cookie(sessionCookie); err == nil {
		if c, ok := s.logins.session(ck.Value); ok {
			return c, nil
		}
	}
	return director.Caller{}, errNoCaller
}

func kindOf(kind string) string {
	if kind == "" {
		return "no kind"
	}
	return kind
}

// statusOf is the HTTP status of an identity or authorization error.
func statusOf(err error) int {
	switch {
	case errors.Is(err, api.ErrUnauthenticated):
		return http.StatusUnauthorized
	case errors.Is(err, api.ErrNotAllowed):
		return http.StatusForbidden
	case errors.Is(err, api.ErrNotFound):
		return http.StatusNotFound
	case errors.Is(err, api.ErrAmbiguous), errors.Is(err, api.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, api.ErrBusy), errors.Is(err, api.ErrUnavailable):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// remote is the client's host.
func remote(r *http.Request) string {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}

// audit records a console login or a refused request in the audit trail.
func (s *Server) audit(r *http.Request, c director.Caller, action, target string, status int, detail string) {
	outcome := "ok"
	if status >= 300 {
		outcome = strconv.Itoa(status) + " " + http.StatusText(status)
	}
	if c.Name == "" {
		c.Name = "anonymous"
	}
	s.d.RecordAudit(api.AuditRecord{
		Caller: c.Name, Org: c.Org, Kind: c.Kind, Role: c.Role, Remote: remote(r),
		Channel: api.AuditWeb, Action: action, Target: target, Outcome: outcome, Detail: detail,
	})
}

// login spends a one-time token for a session cookie and sends the
// browser on to the console, so that the token leaves the address bar.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	token := r.URL.Query().Get("token")
	session, c, expires, ok := s.logins.redeem(token)
	if !ok {
		s.audit(r, director.Caller{}, "login", "", http.StatusUnauthorized, "login link used, expired or unknown")
		s.log.Warn("web console login refused", api.LogRemote, r.RemoteAddr)
		writePage(w, http.StatusUnauthorized, "This login link is used, expired or unknown",
			"A login link works once, for 5 minutes. Run fladmin console for a new link.")
		return
	}
	s.audit(r, c, "login", "", http.StatusOK, "")
	s.log.Info("web console login", api.LogCaller, c.Name, api.LogRole, c.Role, api.LogRemote, r.RemoteAddr)
	http.SetCookie(w, &http.Cookie{
		Name: sessionCookie, Value: session, Path: "/", Expires: expires, MaxAge: int(SessionTTL / time.Second),
		HttpOnly: true, Secure: s.cfg.TLS != nil, SameSite: http.SameSiteStrictMode,
	})
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// index serves the console to a caller, and to anyone else a page that
// says how to log in, with no data.
func (s *Server) index(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if _, err := s.caller(r); err != nil {
		if errors.Is(err, api.ErrNotAllowed) {
			writePage(w, http.StatusForbidden, "Not an admin certificate", err.Error())
			return
		}
		writePage(w, http.StatusUnauthorized, "Log in to the fedplane console",
			"Run fladmin console for a new link, and open it in this browser (or present an admin certificate of the federation).")
		return
	}
	s.page(w, r)
}

// writePage writes a small HTML page with a title and a message.
func writePage(w http.ResponseWriter, status int, title, msg string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	var b strings.Builder
	b.WriteString(`<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">`)
	b.WriteString(`<title>fedplane console</title><link rel="icon" href="data:,"><link rel="stylesheet" href="/app.css"></head><body class="notice"><main class="card"><h1>`)
	b.WriteString(html.EscapeString(title))
	b.WriteString(`</h1><p>`)
	b.WriteString(html.EscapeString(msg))
	b.WriteString(`</p></main></body></html>`)
	w.Write([]byte(b.String()))
}
