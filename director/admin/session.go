package admin

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/api"
)

// This file is FLARE 2.6's login and session commands. FLARE's client logs
// in with `_cert_login <user>`, gets a token and sends it with every later
// request. fedplane identifies every caller by its client certificate
// instead, so a token adds no identity: it is accepted when it names a
// live session of the same caller, refused when it does not, and not
// needed (fladmin sends none).

// Defaults of the session table.
const (
	// DefaultSessionIdle ends a session unused this long (FLARE's default).
	DefaultSessionIdle = time.Hour
	// DefaultSessionMaxAge ends a session this long after its login,
	// however busy it is.
	DefaultSessionMaxAge = 24 * time.Hour
	// DefaultSessionsPerCaller caps one caller's sessions; its oldest ends
	// when a login goes past the cap.
	DefaultSessionsPerCaller = 8
	// DefaultMaxSessions caps all sessions; past it, logins are refused
	// until sessions expire.
	DefaultMaxSessions = 4096
)

// tokenBytes is the size of a session token's random part; a token is
// its lowercase hex.
const tokenBytes = 32

// loginOK and loginReject are _cert_login's answers (a string item), as
// FLARE's client tells a login that worked from one that did not.
const (
	loginOK     = "OK"
	loginReject = "REJECT"
	// sessionInactive, in an error item, is how FLARE's client learns that
	// its session ended; it then closes the session.
	sessionInactive = "session_inactive"
)

// sessions is the table of login sessions, by token.
type sessions struct {
	now       func() time.Time
	idle, age time.Duration
	perCaller int
	max       int

	mu      sync.Mutex
	byToken map[string]*session
}

type session struct {
	caller        string // callerKey of who logged in
	created, last time.Time
}

func newSessions(now func() time.Time) *sessions {
	return &sessions{now: now, idle: DefaultSessionIdle, age: DefaultSessionMaxAge,
		perCaller: DefaultSessionsPerCaller, max: DefaultMaxSessions, byToken: map[string]*session{}}
}

// create starts a session of caller and returns its token.
func (t *sessions) create(caller string) (string, error) {
	var b [tokenBytes]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	token := hex.EncodeToString(b[:])
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	var mine []string
	for tok, s := range t.byToken {
		switch {
		case t.expired(s, now):
			delete(t.byToken, tok)
		case s.caller == caller:
			mine = append(mine, tok)
		}
	}
	if len(mine) >= t.perCaller {
		slices.SortFunc(mine, func(a, b string) int { return t.byToken[a].last.Compare(t.byToken[b].last) })
		for _, tok := range mine[:len(mine)-t.perCaller+1] {
			delete(t.byToken, tok)
		}
	}
	if len(t.byToken) >= t.max {
		return "", fmt.Errorf("%w: director has %d admin sessions open; try again later", api.ErrUnavailable, t.max)
	}
	t.byToken[token] = &session{caller: caller, created: now, last: now}
	return token, nil
}

// use marks token's session active and says whether it is a live session
// of caller.
func (t *sessions) use(token, caller string) bool {
	now := t.now()
	t.mu.Lock()
	defer t.mu.Unlock()
	s, ok := t.byToken[token]
	if !ok || t.expired(s, now) {
		delete(t.byToken, token)
		return false
	}
	if s.caller != caller {
		return false
	}
	s.last = now
	return true
}

// end ends token's session if it is caller's.
func (t *sessions) end(token, caller string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s, ok := t.byToken[token]; ok && s.caller == caller {
		delete(t.byToken, token)
	}
}

func (t *sessions) expired(s *session, now time.Time) bool {
	return now.Sub(s.last) >= t.idle || now.Sub(s.created) >= t.age
}

// parseToken checks a token a request carries: tokenBytes in lowercase
// hex, as create makes them.
func parseToken(s string) (string, error) {
	if len(s) != 2*tokenBytes {
		return "", fmt.Errorf("%w: session token is %d characters long, want %d", api.ErrUnauthenticated, len(s), 2*tokenBytes)
	}
	for i := range len(s) {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return "", fmt.Errorf("%w: session token has %q at %d; want lowercase hex", api.ErrUnauthenticated, c, i)
		}
	}
	return s, nil
}

// tokenOf returns the first token item of a request, as FLARE's server
// reads it.
func tokenOf(m *adminproto.Message) (string, bool) {
	for _, it := range m.Data {
		if it.Type == adminproto.TypeToken {
			s, ok := it.Data.(string)
			return s, ok
		}
	}
	return "", false
}

// sessionKey names req's caller in the session table: its certificate's
// identity with TLS, the name it gives itself without.
func (s *Server) sessionKey(req *request) string {
	c := req.caller
	return strconv.Quote(c.Kind) + " " + strconv.Quote(c.Name) + " " + strconv.Quote(c.Org) + " " + strconv.Quote(c.Role)
}

// checkToken refuses a request whose token names no live session of its
// caller. A request without a token is the caller's certificate's (or,
// without TLS, the local caller's) as ever. _cert_login and
// _check_session read the token themselves.
func (s *Server) checkToken(req *request, cmd command) error {
	if req.name == api.CmdCertLogin || req.name == api.CmdCheckSession {
		return nil
	}
	tok, ok := tokenOf(req.msg)
	if !ok {
		return nil
	}
	tok, err := parseToken(tok)
	if err != nil {
		return err
	}
	if !s.sessions.use(tok, s.sessionKey(req)) {
		return fmt.Errorf("%w: %s: the session token is not a live session of %s; log in again", api.ErrUnauthenticated, sessionInactive, req.caller.Name)
	}
	return nil
}

// rejectLogin makes a refused _cert_login read as FLARE's client expects:
// the string REJECT before the error.
func rejectLogin(reply *adminproto.Message) {
	reply.Data = append([]adminproto.Item{{Type: adminproto.TypeString, Data: loginReject}}, reply.Data...)
}

// certLogin logs the caller in: the user it names must be its
// certificate's name. The reply is FLARE's: the string OK and a token.
func (s *Server) certLogin(ctx context.Context, req *request) (*adminproto.Message, error) {
	if len(req.args) != 1 {
		return nil, s.usage(req.name, "give one user name")
	}
	if user := req.args[0]; user != req.caller.Name {
		return nil, fmt.Errorf("%w: user %q is not the certificate's name %q", api.ErrUnauthenticated, user, req.caller.Name)
	}
	tok, err := s.sessions.create(s.sessionKey(req))
	if err != nil {
		return nil, err
	}
	return replyOK(nil, adminproto.Item{Type: adminproto.TypeString, Data: loginOK}, adminproto.Item{Type: adminproto.TypeToken, Data: tok}), nil
}

// checkSession answers OK while the request's token is a live session of
// its caller, and session_inactive otherwise, as FLARE's server does.
func (s *Server) checkSession(ctx context.Context, req *request) (*adminproto.Message, error) {
	if err := s.noArgs(req); err != nil {
		return nil, err
	}
	tok, ok := tokenOf(req.msg)
	if ok {
		if tok, err := parseToken(tok); err == nil && s.sessions.use(tok, s.sessionKey(req)) {
			return replyOK(nil, adminproto.Item{Type: adminproto.TypeString, Data: loginOK}), nil
		}
	}
	msg := fmt.Sprintf("admin session of %s is not active (timed out after %s idle, or logged out) - log in again", req.caller.Name, s.sessions.idle)
	reply := replyError(adminproto.StatusNotAuthenticated, "%s", sessionInactive)
	reply.Meta["info"] = msg
	reply.Data = append(reply.Data, adminproto.Item{Type: adminproto.TypeString, Data: msg})
	return reply, nil
}

// logout ends the request's session.
func (s *Server) logout(ctx context.Context, req *request) (*adminproto.Message, error) {
	if tok, ok := tokenOf(req.msg); ok {
		if tok, err := parseToken(tok); err == nil {
			s.sessions.end(tok, s.sessionKey(req))
		}
	}
	return replyOK(nil, adminproto.Item{Type: adminproto.TypeString, Data: loginOK}), nil
}

// commandsHeader is the header of _commands' table, which FLARE's client
// reads by position: scope, name, description, usage, confirm, client
// command, visible.
var commandsHeader = []string{"Scope", "Command", "Description", "Usage", "Confirm", "ClientCmd", "Visible"}

// listCommands is FLARE's _commands: the table of commands from which its
// client builds its registry, sorted by scope then name, without the
// session commands.
func (s *Server) listCommands(ctx context.Context, req *request) (*adminproto.Message, error) {
	if err := s.noArgs(req); err != nil {
		return nil, err
	}
	cmds := s.commands()
	var names []string
	for n, c := range cmds {
		if !c.session {
			names = append(names, n)
		}
	}
	slices.SortFunc(names, func(a, b string) int {
		if c := cmp.Compare(cmds[a].scope, cmds[b].scope); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	rows := [][]string{commandsHeader}
	for _, n := range names {
		c := cmds[n]
		confirm := c.confirm
		if confirm == "" {
			confirm = confirmNone
		}
		// Python's str(bool), which FLARE's client lowercases.
		visible := "True"
		if c.hidden {
			visible = "False"
		}
		rows = append(rows, []string{c.scope, n, c.desc, c.usage, confirm, c.clientCmd, visible})
	}
	return replyOK(nil, adminproto.Item{Type: adminproto.TypeTable, Rows: rows}), nil
}
