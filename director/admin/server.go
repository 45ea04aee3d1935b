// Package admin serves the director's admin channel for fladmin: NVIDIA
// FLARE 2.5/2.6's binary and text exchange (spec/admin-wire.md), one
// request and one reply per connection. Each command handler parses its
// arguments, calls the domain (director.Director) and formats the reply;
// the dispatcher authorizes the caller through the domain's table and
// turns the domain's errors into admin statuses through api's table of
// error kinds.
package admin

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/director"
)

// Defaults of Config.
const (
	// DefaultMaxConns caps concurrent admin connections; more are answered
	// "busy" and closed.
	DefaultMaxConns = 64
	// DefaultIdleTimeout cuts off an admin connection on which no byte
	// moved for this long. A slow upload that keeps moving is never cut off.
	DefaultIdleTimeout = 30 * time.Second
	// DefaultStopGrace is how long exchanges in flight may finish once the
	// server stops.
	DefaultStopGrace = 3 * time.Second
	// DefaultHandshakeTimeout bounds a TLS handshake; a connection takes a
	// slot only once its handshake is done.
	DefaultHandshakeTimeout = 10 * time.Second
	// DefaultMaxConnsPerAddr caps the connections of one client address,
	// handshaking or served.
	DefaultMaxConnsPerAddr = 8
	// DefaultMinRate is the slowest a request may arrive, in bytes per
	// second of the time the director waits for it, measured over
	// DefaultRateWindow: a peer that trickles bytes to hold a connection
	// (slowloris) is dropped, a slow link uploading a job is not.
	DefaultMinRate    = 1 << 10
	DefaultRateWindow = 10 * time.Second
)

// Config configures the admin server. Zero fields take the Default values.
type Config struct {
	// TLS, when set, serves mutual TLS: callers and their roles come from
	// client certificates. Without it every caller is a local
	// project_admin named by the request, as a director without TLS
	// listens on loopback only.
	TLS *tls.Config
	// MaxConns caps connections served at once (past the handshake);
	// twice as many (16 at least) may be handshaking besides.
	MaxConns int
	// MaxConnsPerAddr caps one client address's connections, handshaking
	// or served.
	MaxConnsPerAddr  int
	HandshakeTimeout time.Duration
	IdleTimeout      time.Duration
	StopGrace        time.Duration
	// MinRate (bytes/s) and RateWindow: a request that arrives slower,
	// over a window of time spent waiting for it, is dropped. A negative
	// MinRate turns the check off.
	MinRate    int64
	RateWindow time.Duration
	// ConsoleLogin, when set, issues console_login's one-time link to the
	// web console for a caller (web.Server.Login); nil when the director
	// serves no console.
	ConsoleLogin func(director.Caller) (url string, expires time.Time, err error)
}

// Server answers admin connections for a director.
type Server struct {
	d   *director.Director
	cfg Config
	log *slog.Logger
	// done counts exchanges handled, active the connections holding a
	// slot, for tests to wait on.
	done, active atomic.Int64

	mu     sync.Mutex
	byAddr map[string]int // connections per client address

	sessions  *sessions  // FLARE's login sessions (session.go)
	downloads *downloads // FLARE's two-step downloads in progress (download.go)
	uploads   *uploads   // partial uploads held for a resume (uploads.go)
}

// New returns an admin server for d.
func New(d *director.Director, cfg Config) *Server {
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = DefaultIdleTimeout
	}
	if cfg.StopGrace <= 0 {
		cfg.StopGrace = DefaultStopGrace
	}
	if cfg.HandshakeTimeout <= 0 {
		cfg.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if cfg.MaxConnsPerAddr <= 0 {
		cfg.MaxConnsPerAddr = DefaultMaxConnsPerAddr
	}
	if cfg.MinRate == 0 {
		cfg.MinRate = DefaultMinRate
	}
	if cfg.RateWindow <= 0 {
		cfg.RateWindow = DefaultRateWindow
	}
	now := d.Config().Now
	if now == nil {
		now = time.Now
	}
	return &Server{d: d, cfg: cfg, log: d.Config().Logger, byAddr: map[string]int{},
		sessions: newSessions(now), downloads: newDownloads(now), uploads: newUploads(now, d.HeldUploads(DefaultUploadTTL, now()))}
}

// minHandshakes is the fewest TLS handshakes that may run at once; else
// twice MaxConns, so that clients still handshake while every slot is
// taken and learn that it is.
const minHandshakes = 16

// downloadSweep is how often unused download transactions are looked for.
const downloadSweep = time.Minute

// maxDrain bounds how much of a refused upload is read and thrown away.
const maxDrain = 64 << 20

// request is one decoded admin request.
type request struct {
	msg    *adminproto.Message
	name   string   // command name, e.g. "list_jobs"
	args   []string // the words after the name
	caller director.Caller
	// body is the binary exchange's body (submit_job), nil for text requests.
	body *adminproto.Binary
	// w receives a binary reply (download_job); handlers that use it return nil.
	w io.Writer
	// remote is the client's host, which names a caller without TLS for
	// the per-caller bounds.
	remote string
}

// command is a handler and what it needs. A handler returns its reply,
// nil when it wrote a binary reply itself, or an error, which the
// dispatcher turns into a reply.
type command struct {
	run    func(ctx context.Context, req *request) (*adminproto.Message, error)
	binary bool   // the request must be a binary exchange
	usage  string // shown on syntax errors
	// What _commands tells FLARE's client: the command's scope (see
	// resolve), description, confirmation and client-side handler, and
	// whether a user sees it.
	scope, desc, confirm, clientCmd string
	hidden                          bool
	// session marks FLARE's login and session commands, which _commands
	// does not list.
	session bool
}

// Serve accepts admin connections on lis until ctx ends: one request and
// one reply per connection, as FLARE 2.6, over TLS when configured (each
// connection's handshake runs in its own goroutine). It owns lis and
// returns once every connection it started is done.
func (s *Server) Serve(ctx context.Context, lis net.Listener) error {
	sem := make(chan struct{}, s.cfg.MaxConns)
	handshakes := make(chan struct{}, max(2*s.cfg.MaxConns, minHandshakes))
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
	)
	sweep := time.NewTicker(downloadSweep)
	swept := make(chan struct{})
	defer func() { sweep.Stop(); close(swept) }()
	go func() {
		for {
			select {
			case <-sweep.C:
				s.downloads.sweep()
				s.uploads.sweep()
			case <-swept:
				return
			}
		}
	}()
	stop := context.AfterFunc(ctx, func() {
		lis.Close()
		// Give exchanges in flight the grace, then cut them off.
		time.AfterFunc(s.cfg.StopGrace, func() {
			mu.Lock()
			defer mu.Unlock()
			for c := range conns {
				c.Close()
			}
		})
	})
	defer stop()
	var err error
	for {
		var c net.Conn
		c, err = lis.Accept()
		if err != nil {
			if ctx.Err() != nil {
				err = nil
			} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			break
		}
		addr := hostOf(c.RemoteAddr())
		if !s.enterAddr(addr) {
			wg.Go(func() {
				s.refuseBusy(c, fmt.Errorf("%w: director is busy: %s has %d admin connections open; try again", api.ErrUnavailable, addr, s.cfg.MaxConnsPerAddr))
			})
			continue
		}
		select {
		case handshakes <- struct{}{}:
		default:
			s.leaveAddr(addr)
			wg.Go(func() { s.refuseBusy(c, errBusy(s.cfg.MaxConns)) })
			continue
		}
		mu.Lock()
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Go(func() {
			slotted := false
			defer func() {
				c.Close()
				mu.Lock()
				delete(conns, c)
				mu.Unlock()
				s.leaveAddr(addr)
				s.done.Add(1)
				if slotted { // after done: no slot held means all counted
					s.active.Add(-1)
					<-sem
				}
			}()
			// The handshake runs outside the slots: a peer that never
			// finishes one holds a handshake place for HandshakeTimeout
			// at most, and no slot.
			log := s.log.With(api.LogRemote, c.RemoteAddr().String())
			conn, who, ok := s.caller(c, log)
			<-handshakes
			if !ok {
				return
			}
			select {
			case sem <- struct{}{}:
				slotted = true
				s.active.Add(1)
			default:
				conn.SetDeadline(time.Now().Add(time.Second))
				adminproto.WriteMessage(conn, s.errorReply(context.Background(), "", errBusy(s.cfg.MaxConns)))
				return
			}
			s.handle(ctx, conn, who, log)
		})
	}
	wg.Wait()
	s.downloads.closeAll()
	s.uploads.closeAll()
	if err != nil {
		return fmt.Errorf("admin accept: %w", err)
	}
	return nil
}

// refuseBusy answers a connection refused before its handshake with err,
// without reading its request, within a second.
func (s *Server) refuseBusy(c net.Conn, err error) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if s.cfg.TLS != nil {
		// Over TLS, as the client expects: the reply in the clear would
		// read to it as a server without TLS.
		c = tls.Server(c, s.cfg.TLS)
	}
	adminproto.WriteMessage(c, s.errorReply(context.Background(), "", err))
}

func errBusy(max int) error {
	return fmt.Errorf("%w: director is busy: %d admin connections are open; try again", api.ErrUnavailable, max)
}

// hostOf is the client address of a connection, without the port.
func hostOf(a net.Addr) string {
	if host, _, err := net.SplitHostPort(a.String()); err == nil {
		return host
	}
	return a.String()
}

// enterAddr counts a connection of addr, unless addr has
// MaxConnsPerAddr already.
func (s *Server) enterAddr(addr string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byAddr[addr] >= s.cfg.MaxConnsPerAddr {
		return false
	}
	s.byAddr[addr]++
	return true
}

func (s *Server) leaveAddr(addr string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byAddr[addr]--; s.byAddr[addr] <= 0 {
		delete(s.byAddr, addr)
	}
}

// handle reads one request from conn, whose caller is who, runs it, and
// writes the reply.
func (s *Server) handle(ctx context.Context, conn net.Conn, who director.Caller, log *slog.Logger) {
	c := adminproto.NewIdleConn(newRateConn(conn, s.cfg.MinRate, s.cfg.RateWindow), s.cfg.IdleTimeout)
	br := bufio.NewReaderSize(c, 64<<10)
	// Every admin exchange is at least wrongPortPeekLen bytes long, so the
	// peek never waits on an admin client.
	if first, err := br.Peek(wrongPortPeekLen); err == nil {
		if msg, wrong := wrongPortReply(first); wrong {
			log.Warn("not an admin client", api.LogReason, msg)
			// One deadline for the whole answer, which a trickle of
			// bytes does not move (the idle conn's would).
			conn.SetDeadline(time.Now().Add(s.cfg.IdleTimeout))
			buffered, _ := br.Peek(br.Buffered())
			answerWrongPort(struct {
				io.Reader
				io.Writer
			}{io.MultiReader(bytes.NewReader(buffered), conn), conn}, msg)
			return
		}
	}
	var reply *adminproto.Message
	req, err := s.read(br, who)
	if err != nil {
		reply = s.errorReply(ctx, "", err)
	} else {
		req.w = c
		req.remote = hostOf(conn.RemoteAddr())
		reply = s.dispatch(ctx, log, req)
		if req.body != nil && reply != nil {
			// A handler that refused before reading the body leaves it
			// unread; drain some of it so a client still sending can read
			// our reply rather than a connection reset.
			io.CopyN(io.Discard, req.body.Body(), maxDrain)
		}
	}
	if reply == nil {
		return // the handler wrote a binary reply itself
	}
	bw := bufio.NewWriter(c)
	if err := adminproto.WriteMessage(bw, reply); err == nil {
		err = bw.Flush()
		if err != nil {
			log.Debug("admin reply not delivered", api.LogErr, err)
		}
	}
}

// read decodes the request: text, or binary whose meta is the request
// envelope. Its errors are of api's kinds, for errorReply.
func (s *Server) read(br *bufio.Reader, who director.Caller) (*request, error) {
	kind, err := adminproto.PeekKind(br)
	if err != nil {
		return nil, fmt.Errorf("%w: read request: %w", api.ErrDataLoss, err)
	}
	req := &request{caller: who}
	switch kind {
	case adminproto.KindBinary:
		maxJob := s.d.Config().MaxJobSize
		b, err := adminproto.ReadBinary(br, uint64(maxJob))
		if errors.Is(err, adminproto.ErrTooLarge) {
			return nil, fmt.Errorf("%w: request refused: %w (--max-job-size is %d bytes)", api.ErrTooLarge, err, maxJob)
		}
		if err != nil {
			return nil, fmt.Errorf("%w: read binary request: %w", api.ErrDataLoss, err)
		}
		req.body = b
		req.msg, err = adminproto.DecodeMessage(b.Meta)
		if err != nil {
			return nil, fmt.Errorf("%w: binary request meta is not a request envelope: %w", api.ErrInvalid, err)
		}
	default:
		req.msg, err = adminproto.ReadMessage(br, adminproto.MaxTextSize)
		if err != nil {
			return nil, fmt.Errorf("%w: read request: %w", api.ErrInvalid, err)
		}
	}
	line, err := req.msg.Command()
	if err != nil {
		return nil, fmt.Errorf("%w: request has no command: %w", api.ErrInvalid, err)
	}
	words := strings.Fields(line)
	if len(words) == 0 {
		return nil, fmt.Errorf("%w: empty command", api.ErrInvalid)
	}
	req.name, req.args = words[0], words[1:]
	// Without TLS a local caller may name itself (fladmin sends $USER).
	if u, ok := req.msg.Meta[api.MetaUser].(string); ok && api.ValidateName("user", u) == nil && s.cfg.TLS == nil {
		req.caller.Name = u
	}
	return req, nil
}

// anonymous is the caller name of a plaintext request that names no user.
const anonymous = "anonymous"

// dispatch authorizes req's caller, runs its handler and logs the outcome.
// A handler's error becomes the reply whose status api's table gives its
// kind; an internal error is logged and told as api.InternalMessage.
func (s *Server) dispatch(ctx context.Context, log *slog.Logger, req *request) *adminproto.Message {
	t0 := time.Now()
	name, cmd, err := s.resolve(req.name)
	known := err == nil
	if known {
		req.name = name
	}
	var reply *adminproto.Message
	switch {
	case err != nil:
	case cmd.binary && req.body == nil:
		err = fmt.Errorf("%w: %s needs a binary request whose body is the job archive", api.ErrInvalid, req.name)
	case !cmd.binary && req.body != nil:
		err = fmt.Errorf("%w: %s takes a text request, not a binary one", api.ErrInvalid, req.name)
	default:
		if err = s.checkToken(req, cmd); err != nil {
			break
		}
		if err = director.Authorize(req.caller, req.name); err == nil {
			reply, err = cmd.run(ctx, req)
		}
	}
	if err != nil {
		reply = s.errorReply(ctx, req.name, err)
		if req.name == api.CmdCertLogin {
			rejectLogin(reply)
		}
	}
	attrs := []any{api.LogMethod, req.name, api.LogCaller, req.caller.Name, api.LogTook, time.Since(t0)}
	if reply != nil {
		// Only names the director knows become a label: a client's
		// made-up commands all count as "unknown".
		counted := req.name
		if !known {
			counted = "unknown"
		}
		s.d.Prometheus().AdminCommand(counted, reply.Status())
		attrs = append(attrs, api.LogStatus, reply.Status())
		if st := reply.Status(); st != adminproto.StatusOK {
			attrs = append(attrs, api.LogReason, reply.Info())
		}
	}
	log.Info("admin command", attrs...)
	s.audit(req, reply)
	return reply
}

// audit adds the request to the audit trail: who, what it named and how
// it ended. A binary handler that wrote its own reply (a download) ended
// well as far as the director could tell.
func (s *Server) audit(req *request, reply *adminproto.Message) {
	target := strings.Join(req.args, " ")
	outcome, detail := adminproto.StatusOK, ""
	if reply != nil {
		outcome = reply.Status()
		if outcome != adminproto.StatusOK {
			detail = reply.Info()
		} else if id, ok := reply.Meta[api.MetaJobID].(string); ok && req.name == api.CmdSubmitJob {
			target = strings.TrimSpace(target + " job " + id)
		}
	}
	s.d.RecordAudit(api.AuditRecord{
		Caller: req.caller.Name, Org: req.caller.Org, Kind: req.caller.Kind, Role: req.caller.Role, Remote: req.remote,
		Channel: api.AuditAdmin, Action: api.Truncate(req.name, api.MaxNameLen), Target: target, Outcome: outcome, Detail: detail,
	})
}

// errorReply is the reply to a command that failed with err: the status
// of err's kind and its message, or, for an internal error, a logged
// error and api.InternalMessage.
func (s *Server) errorReply(ctx context.Context, command string, err error) *adminproto.Message {
	_, status, internal := api.Codes(err)
	if internal {
		s.log.ErrorContext(ctx, "admin command failed", api.LogMethod, command, api.LogErr, err)
		return replyError(status, "%s", api.InternalMessage)
	}
	return replyError(status, "%v", err)
}

// replyOK is a successful reply with meta (status "ok" added) and items.
func replyOK(meta map[string]any, items ...adminproto.Item) *adminproto.Message {
	if meta == nil {
		meta = map[string]any{}
	}
	meta["status"] = adminproto.StatusOK
	if items == nil {
		items = []adminproto.Item{}
	}
	return &adminproto.Message{Time: time.Now().UTC().Format(time.RFC3339Nano), Data: items, Meta: meta}
}

// replyError is a refusal with a status from the spec and a message that
// says what was wrong.
func replyError(status, format string, args ...any) *adminproto.Message {
	msg := fmt.Sprintf(format, args...)
	return &adminproto.Message{
		Time: time.Now().UTC().Format(time.RFC3339Nano),
		Data: []adminproto.Item{{Type: adminproto.TypeError, Data: msg}},
		Meta: map[string]any{"status": status, "info": msg},
	}
}
