package web

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"sync"
	"time"

	"github.com/fedplane/fedplane/director"
)

// A browser without the admin certificate logs in with a one-time link
// that `fladmin console` prints (console_login), as Jupyter's token URL:
// the link's token buys a session cookie. Both live in memory only, so a
// restart logs every browser out. Only their SHA-256 is kept, so that a
// memory dump or a debug print shows no usable secret; each map is capped
// and evicts its oldest entry, so a flood of logins cannot grow memory.

// Lifetimes and caps of login tokens and sessions.
const (
	// TokenTTL is how long a login link works (once).
	TokenTTL = 5 * time.Minute
	// SessionTTL is how long a session cookie works.
	SessionTTL = 12 * time.Hour
	// MaxTokens and MaxSessions cap what is kept; the oldest goes first.
	MaxTokens   = 1000
	MaxSessions = 1000
	// secretBytes is the size of a token and a session id: 256 bits.
	secretBytes = 32
)

// grant is what a token or a session stands for: a caller until a time.
type grant struct {
	caller  director.Caller
	created time.Time
	expires time.Time
}

// grants is a capped map of hashed secrets to grants.
type grants struct {
	max int
	m   map[[sha256.Size]byte]grant
}

func newGrants(max int) *grants {
	return &grants{max: max, m: map[[sha256.Size]byte]grant{}}
}

// add keeps g under secret's hash, first dropping what has expired and,
// when full, the oldest grant.
func (gs *grants) add(secret string, g grant, now time.Time) {
	for k, v := range gs.m {
		if !now.Before(v.expires) {
			delete(gs.m, k)
		}
	}
	for len(gs.m) >= gs.max {
		var oldest [sha256.Size]byte
		first := true
		for k, v := range gs.m {
			if first || v.created.Before(gs.m[oldest].created) {
				oldest, first = k, false
			}
		}
		delete(gs.m, oldest)
	}
	gs.m[sha256.Sum256([]byte(secret))] = g
}

// get returns secret's grant if it has not expired; take also removes it.
func (gs *grants) get(secret string, now time.Time, take bool) (grant, bool) {
	k := sha256.Sum256([]byte(secret))
	g, ok := gs.m[k]
	if !ok {
		return grant{}, false
	}
	if take || !now.Before(g.expires) {
		delete(gs.m, k)
	}
	return g, now.Before(g.expires)
}

// logins holds the pending login tokens and the sessions.
type logins struct {
	now func() time.Time

	mu       sync.Mutex
	tokens   *grants
	sessions *grants
}

func newLogins(now func() time.Time) *logins {
	return &logins{now: now, tokens: newGrants(MaxTokens), sessions: newGrants(MaxSessions)}
}

// newSecret is a random 256-bit secret, URL-safe.
func newSecret() string {
	b := make([]byte, secretBytes)
	rand.Read(b) // never fails (crypto/rand)
	return base64.RawURLEncoding.EncodeToString(b)
}

// issue makes a login token for c, valid TokenTTL once.
func (l *logins) issue(c director.Caller) (token string, expires time.Time) {
	now := l.now()
	token, expires = newSecret(), now.Add(TokenTTL)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.tokens.add(token, grant{caller: c, created: now, expires: expires}, now)
	return token, expires
}

// redeem spends token for a new session, whose id it returns. ok is false
// for a token that was never issued, is spent, or has expired.
func (l *logins) redeem(token string) (session string, c director.Caller, expires time.Time, ok bool) {
	if len(token) > 2*secretBytes {
		return "", director.Caller{}, time.Time{}, false // not ours: no hashing of a long string
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	g, ok := l.tokens.get(token, now, true)
	if !ok {
		return "", director.Caller{}, time.Time{}, false
	}
	session, expires = newSecret(), now.Add(SessionTTL)
	l.sessions.add(session, grant{caller: g.caller, created: now, expires: expires}, now)
	return session, g.caller, expires, true
}

// session returns the caller of a live session.
func (l *logins) session(id string) (director.Caller, bool) {
	if id == "" || len(id) > 2*secretBytes {
		return director.Caller{}, false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	g, ok := l.sessions.get(id, l.now(), false)
	return g.caller, ok
}
