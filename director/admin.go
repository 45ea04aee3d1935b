package director

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/api"
)

// Defaults of the admin listener.
const (
	// DefaultAdminMaxConns caps concurrent admin connections; more are
	// answered "busy" and closed.
	DefaultAdminMaxConns = 64
	// DefaultAdminIdleTimeout cuts off an admin connection on which no byte
	// moved for this long. A slow upload that keeps moving is never cut off.
	DefaultAdminIdleTimeout = 30 * time.Second
	// DefaultMaxJobSize caps a job archive upload (--max-job-size).
	DefaultMaxJobSize = 10 << 30
	// DefaultMaxUnpackedSize caps a job archive's unpacked total.
	DefaultMaxUnpackedSize = 20 << 30
)

// maxDrain bounds how much of a refused upload is read and thrown away.
const maxDrain = 64 << 20

// adminRequest is one decoded admin request.
type adminRequest struct {
	msg    *adminproto.Message
	name   string   // command name, e.g. "list_jobs"
	args   []string // the words after the name
	caller caller
	// body is the binary exchange's body (submit_job), nil for text requests.
	body *adminproto.Binary
	// w receives a binary reply (download_job); handlers that use it return nil.
	w io.Writer
}

// caller is who sent an admin request.
type caller struct {
	Name string
	Org  string
	Role string
}

// adminCommand is a handler and what it needs.
type adminCommand struct {
	run    func(ctx context.Context, req *adminRequest) *adminproto.Message
	binary bool   // the request must be a binary exchange
	usage  string // shown on syntax errors
}

// serveAdmin accepts admin connections on lis until ctx ends: one request and
// one reply per connection, as FLARE 2.6. It owns lis and returns once every
// connection it started is done.
func (d *Director) serveAdmin(ctx context.Context, lis net.Listener) error {
	sem := make(chan struct{}, d.cfg.AdminMaxConns)
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
	)
	stop := context.AfterFunc(ctx, func() {
		lis.Close()
		// Give exchanges in flight the grace, then cut them off.
		time.AfterFunc(d.cfg.StopGrace, func() {
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
		select {
		case sem <- struct{}{}:
		default:
			wg.Go(func() { d.refuseBusy(c) })
			continue
		}
		mu.Lock()
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Go(func() {
			defer func() { <-sem; d.adminDone.Add(1) }()
			d.handleAdminConn(ctx, c)
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
		})
	}
	wg.Wait()
	if err != nil {
		return fmt.Errorf("admin accept: %w", err)
	}
	return nil
}

// refuseBusy answers a connection over the cap without reading its request.
func (d *Director) refuseBusy(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	adminproto.WriteMessage(c, replyError(adminproto.StatusError,
		"director is busy: %d admin connections are open; try again", d.cfg.AdminMaxConns))
}

// handleAdminConn reads one request from c, runs it, and writes the reply.
func (d *Director) handleAdminConn(ctx context.Context, raw net.Conn) {
	defer raw.Close()
	log := d.log.With("remote", raw.RemoteAddr().String())
	who, err := d.adminCaller(raw)
	if err != nil {
		log.Warn("admin connection refused", keyErr, err)
		return
	}
	c := adminproto.NewIdleConn(raw, d.cfg.AdminIdleTimeout)
	br := bufio.NewReaderSize(c, 64<<10)
	req, reply := d.readAdminRequest(br, who)
	if req != nil {
		req.w = c
		reply = d.runAdmin(ctx, log, req)
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
			log.Debug("admin reply not delivered", keyErr, err)
		}
	}
}

// readAdminRequest decodes the request: text, or binary whose meta is the
// request envelope. It returns either a request or an error reply.
func (d *Director) readAdminRequest(br *bufio.Reader, who caller) (*adminRequest, *adminproto.Message) {
	kind, err := adminproto.PeekKind(br)
	if err != nil {
		return nil, replyError(adminproto.StatusError, "read request: %v", err)
	}
	req := &adminRequest{caller: who}
	switch kind {
	case adminproto.KindBinary:
		b, err := adminproto.ReadBinary(br, uint64(d.cfg.MaxJobSize))
		if err != nil {
			if errors.Is(err, adminproto.ErrTooLarge) {
				return nil, replyError(adminproto.StatusError, "request refused: %v (--max-job-size is %d bytes)", err, d.cfg.MaxJobSize)
			}
			return nil, replyError(adminproto.StatusError, "read binary request: %v", err)
		}
		req.body = b
		req.msg, err = adminproto.DecodeMessage(b.Meta)
		if err != nil {
			return nil, replyError(adminproto.StatusSyntaxError, "binary request meta is not a request envelope: %v", err)
		}
	default:
		req.msg, err = adminproto.ReadMessage(br, adminproto.MaxTextSize)
		if err != nil {
			return nil, replyError(adminproto.StatusSyntaxError, "read request: %v", err)
		}
	}
	line, err := req.msg.Command()
	if err != nil {
		return nil, replyError(adminproto.StatusSyntaxError, "request has no command: %v", err)
	}
	words := strings.Fields(line)
	if len(words) == 0 {
		return nil, replyError(adminproto.StatusSyntaxError, "empty command")
	}
	req.name, req.args = words[0], words[1:]
	// Without TLS a local caller may name itself (fladmin sends $USER).
	if u, ok := req.msg.Meta["user"].(string); ok && api.ValidateName("user", u) == nil && d.cfg.TLS == nil {
		req.caller.Name = u
	}
	return req, nil
}

// anonymous is the caller name of a plaintext request that names no user.
const anonymous = "anonymous"

// runAdmin dispatches req to its handler and logs the outcome.
func (d *Director) runAdmin(ctx context.Context, log *slog.Logger, req *adminRequest) *adminproto.Message {
	t0 := time.Now()
	cmd, ok := d.adminCommands()[req.name]
	var reply *adminproto.Message
	authErr := mayRun(req.caller, req.name)
	switch {
	case !ok:
		reply = replyError(adminproto.StatusSyntaxError, "unknown command %q; known: %s", req.name, strings.Join(d.adminCommandNames(), ", "))
	case authErr != nil:
		reply = replyError(adminproto.StatusNotAuthorized, "%v", authErr)
	case cmd.binary && req.body == nil:
		reply = replyError(adminproto.StatusSyntaxError, "%s needs a binary request whose body is the job archive", req.name)
	case !cmd.binary && req.body != nil:
		reply = replyError(adminproto.StatusSyntaxError, "%s takes a text request, not a binary one", req.name)
	default:
		reply = cmd.run(ctx, req)
	}
	attrs := []any{"command", req.name, "caller", req.caller.Name, "took", time.Since(t0)}
	if reply != nil {
		attrs = append(attrs, "status", reply.Status())
		if s := reply.Status(); s != adminproto.StatusOK {
			attrs = append(attrs, keyReason, reply.Info())
		}
	}
	log.Info("admin command", attrs...)
	return reply
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
