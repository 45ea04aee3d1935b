package adminproto

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"time"
)

// DefaultTimeout is the Client's idle timeout when Timeout is zero.
const DefaultTimeout = 30 * time.Second

// replyBufferSize is the read buffer of an exchange: large replies (a
// list_envoys of 10,000 envoys is 3 MiB) arrive in reads of this size.
const replyBufferSize = 64 << 10

// Client runs exchanges with the director's admin port, one request and one
// reply per connection (the FLARE 2.6 pattern). A Client is safe for
// concurrent use; each call opens its own connection.
//
// A Client may know the admin ports of several replicas of the director
// (Addr, then Fallback), for a site without a load balancer in front of
// them: each exchange connects to the first that takes the connection, in
// that order. A port that refuses it, does not answer in time or fails the
// TLS handshake is passed over; once connected, the exchange stays with
// that replica, and whatever then goes wrong, including an answer the
// replica refuses with, is the exchange's error: a request sent is never
// sent again elsewhere, where it might be carried out twice.
type Client struct {
	// Addr is the admin port's host:port: the first tried.
	Addr string

	// Fallback are the admin ports (host:port) of more replicas of the
	// director, tried in order when Addr cannot be connected to.
	Fallback []string

	// Dial opens the connection: plain TCP when nil, TLS with a custom one.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	// Timeout is the idle timeout of an exchange (DefaultTimeout if zero):
	// the exchange fails when nothing has moved for this long, however long
	// it takes in all. It also bounds connecting to each address.
	Timeout time.Duration
}

// Do sends a text request and returns the director's text reply. A reply
// with an error status is not an error of Do: check Status.
func (c *Client) Do(ctx context.Context, req *Message) (*Message, error) {
	x, err := c.requestText(ctx, req)
	if err != nil {
		return nil, err
	}
	defer x.close()
	return x.readReply()
}

// DoMeta is Do for a client that decodes the reply's meta into typed values
// itself: it returns the reply's Meta undecoded, and streams the values of
// the keys that stream (which may be nil) takes, as ReadMeta does, so that a
// large reply is never held whole. A reply with an error status is not an
// error of DoMeta: check Status.
func (c *Client) DoMeta(ctx context.Context, req *Message, stream MetaStreamer) (Meta, error) {
	x, err := c.requestText(ctx, req)
	if err != nil {
		return nil, err
	}
	defer x.close()
	meta, err := ReadMeta(&docReader{br: x.br, max: MaxTextSize}, stream)
	if err != nil {
		return nil, x.fail("read reply", err)
	}
	return meta, nil
}

// errBinaryReply is a binary reply where a text one was due.
var errBinaryReply = errors.New("got a binary exchange, want text")

// requestText is request for a text reply: a binary one is an error.
func (c *Client) requestText(ctx context.Context, req *Message) (*exchange, error) {
	x, kind, err := c.request(ctx, req)
	if err != nil {
		return nil, err
	}
	if kind != KindText {
		err = x.fail("read reply", errBinaryReply)
		x.close()
		return nil, err
	}
	return x, nil
}

// request opens an exchange, sends req as text and waits for the reply to
// begin. It returns the exchange, which the caller closes, and the reply's
// kind.
func (c *Client) request(ctx context.Context, req *Message) (*exchange, Kind, error) {
	x, err := c.open(ctx)
	if err != nil {
		return nil, 0, err
	}
	if err := WriteMessage(x.conn, req); err != nil {
		err = x.fail("send request", err)
		x.close()
		return nil, 0, err
	}
	kind, err := PeekKind(x.br)
	if err != nil {
		err = x.fail("read reply", noReply(err))
		x.close()
		return nil, 0, err
	}
	return x, kind, nil
}

// Upload sends a binary request, whose meta is req and whose body is
// bodySize bytes streamed from body, and returns the director's text reply.
// body must end after bodySize bytes (see WriteBinary).
//
// The reply is read while the body is still being sent: if the director
// refuses the upload early, Upload stops sending and returns its reply; only
// if no reply can be read does it return the error that sending met. Upload
// returns after it has stopped reading body.
func (c *Client) Upload(ctx context.Context, req *Message, bodySize uint64, body io.Reader) (*Message, error) {
	meta, err := EncodeMessage(req)
	if err != nil {
		return nil, err
	}
	if len(meta) > MaxMetaSize {
		return nil, fmt.Errorf("request of %d bytes is %w (limit %d)", len(meta), ErrTooLarge, MaxMetaSize)
	}
	x, err := c.open(ctx)
	if err != nil {
		return nil, err
	}
	defer x.close()

	cw := &connWriter{w: x.conn}
	writec := make(chan error, 1)
	go func() {
		bw := bufio.NewWriterSize(cw, 64<<10)
		err := WriteBinary(bw, meta, bodySize, body)
		if err == nil {
			err = bw.Flush()
		}
		writec <- err
	}()
	type reply struct {
		m   *Message
		err error
	}
	readc := make(chan reply, 1)
	go func() {
		m, err := x.readText()
		readc <- reply{m, err}
	}()

	select {
	case r := <-readc:
		if r.err == nil {
			// The director replied, perhaps before it had the whole
			// body: stop sending.
			x.conn.Close()
			<-writec
			return r.m, nil
		}
		select {
		case werr := <-writec:
			if werr != nil {
				return nil, x.fail("send upload", werr)
			}
			return nil, x.fail("read reply", r.err)
		default:
			// The director hung up or stalled while we were sending.
			x.conn.Close()
			<-writec
			return nil, x.fail("send upload", r.err)
		}
	case werr := <-writec:
		if werr != nil && cw.err == nil {
			// Reading body failed and the director still waits for the
			// rest of the frame; no reply is coming.
			x.conn.Close()
			<-readc
			return nil, x.fail("send upload", werr)
		}
		// Sent, or the connection broke, perhaps because the director
		// refused early and closed: its reply says why.
		r := <-readc
		switch {
		case r.err == nil:
			return r.m, nil
		case werr != nil:
			return nil, x.fail("send upload", werr)
		}
		return nil, x.fail("read reply", r.err)
	}
}

// Download sends a text request and streams the body of the director's
// binary reply to w, verifying its checksum. It returns the reply's meta as a
// Message: a JSON envelope is decoded as one, another JSON object becomes its
// Meta, and an empty meta an empty Message. If the body fails to arrive whole
// the error says so, and what was written to w must not be used.
//
// A text reply (the director refusing, usually) is returned as the Message,
// with w untouched; check Status. maxBody limits the body size accepted.
func (c *Client) Download(ctx context.Context, req *Message, maxBody uint64, w io.Writer) (*Message, error) {
	return c.DownloadTo(ctx, req, maxBody, func(*Message) (io.Writer, error) { return w, nil })
}

// DownloadTo is Download for a client that picks where the body goes once
// it has read the reply's meta (a resumed download appends to what it
// holds or starts over, as the meta says): open is called with the meta
// before the first byte of the body, and an error of open ends the
// exchange with that error. A text reply does not call open.
func (c *Client) DownloadTo(ctx context.Context, req *Message, maxBody uint64, open func(*Message) (io.Writer, error)) (*Message, error) {
	x, kind, err := c.request(ctx, req)
	if err != nil {
		return nil, err
	}
	defer x.close()
	if kind == KindText {
		return x.readReply()
	}
	bin, err := ReadBinary(x.br, maxBody)
	if err != nil {
		return nil, x.fail("read reply", err)
	}
	m, err := metaMessage(bin.Meta)
	if err != nil {
		return nil, fmt.Errorf("read reply: %w", err)
	}
	w, err := open(m)
	if err != nil {
		return nil, err
	}
	if _, err := bin.CopyBody(w); err != nil {
		return nil, x.fail("download body", err)
	}
	return m, nil
}

// metaMessage makes a Message of a binary reply's meta.
func metaMessage(meta []byte) (*Message, error) {
	if len(bytes.TrimSpace(meta)) == 0 {
		return &Message{Meta: map[string]any{}}, nil
	}
	var obj map[string]any
	if err := json.Unmarshal(meta, &obj); err != nil || obj == nil {
		return nil, errors.New("reply meta is not a JSON object")
	}
	_, hasTime := obj["time"]
	_, hasData := obj["data"]
	_, hasMeta := obj["meta"]
	if hasTime || hasData || hasMeta {
		if m, err := DecodeMessage(meta); err == nil {
			return m, nil
		}
	}
	return &Message{Meta: obj}, nil
}

// exchange is one connection to the admin port.
type exchange struct {
	ctx     context.Context
	addr    string
	timeout time.Duration
	conn    net.Conn // with the idle timeout
	br      *bufio.Reader
	head    *headReader // the first bytes of the reply, to tell what answered
	stop    func() bool // stops closing conn when ctx is done
}

// open connects to the first of the Client's addresses that takes the
// connection, and returns the exchange on it. When all fail, the error
// names each address with its failure.
func (c *Client) open(ctx context.Context) (*exchange, error) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	addrs := append([]string{c.Addr}, c.Fallback...)
	var failed connectErrors
	for _, addr := range addrs {
		raw, err := c.connect(ctx, addr, timeout)
		switch {
		case err == nil:
			return newExchange(ctx, addr, raw, timeout), nil
		case ctx.Err() != nil || len(addrs) == 1:
			return nil, fmt.Errorf("connect to director admin port %s: %w", addr, err)
		}
		failed = append(failed, addrError{addr: addr, err: err})
	}
	return nil, fmt.Errorf("connect to director admin port: %w", failed)
}

// connect dials addr, with the TLS handshake if the Client's Dial does
// one, in timeout at most, and returns the reason it failed.
func (c *Client) connect(ctx context.Context, addr string, timeout time.Duration) (net.Conn, error) {
	dial := c.Dial
	if dial == nil {
		dial = new(net.Dialer).DialContext
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	raw, err := dial(dctx, "tcp", addr)
	switch {
	case err == nil:
		return raw, nil
	case ctx.Err() != nil:
		return nil, context.Cause(ctx)
	case peerOfHandshake(err) != 0:
		return nil, &WrongPortError{Addr: addr, Peer: peerOfHandshake(err), Err: dialCause(err)}
	}
	return nil, dialCause(err)
}

// addrError is why one address could not be connected to.
type addrError struct {
	addr string
	err  error
}

// connectErrors are the failures of every address of a Client, in the
// order tried; errors.Is and errors.As see each.
type connectErrors []addrError

func (e connectErrors) Error() string {
	var b strings.Builder
	for i, a := range e {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(a.addr + ": " + a.err.Error())
	}
	return b.String()
}

func (e connectErrors) Unwrap() []error {
	errs := make([]error, len(e))
	for i, a := range e {
		errs[i] = a.err
	}
	return errs
}

// newExchange starts an exchange on raw, a connection to addr.
func newExchange(ctx context.Context, addr string, raw net.Conn, timeout time.Duration) *exchange {
	conn := NewIdleConn(raw, timeout)
	head := &headReader{r: conn}
	return &exchange{
		ctx:     ctx,
		addr:    addr,
		timeout: timeout,
		conn:    conn,
		head:    head,
		br:      bufio.NewReaderSize(head, replyBufferSize),
		// Closing the connection is what interrupts a blocked Read or Write.
		stop: context.AfterFunc(ctx, func() { raw.Close() }),
	}
}

// dialCause strips what a dial error repeats ("dial tcp ADDR: connect: ")
// down to the reason, such as "connection refused".
func dialCause(err error) error {
	var op *net.OpError
	if errors.As(err, &op) {
		err = op.Err
	}
	var sc *os.SyscallError
	if errors.As(err, &sc) {
		err = sc.Err
	}
	return err
}

func (x *exchange) close() {
	x.stop()
	x.conn.Close()
}

// fail describes err, met during op. Cancellation and stalls are reported as
// such rather than by the errors of the closed or timed-out connection; a
// reply whose first bytes are another protocol's as a WrongPortError.
func (x *exchange) fail(op string, err error) error {
	if x.ctx.Err() != nil {
		return fmt.Errorf("%s: %w", op, context.Cause(x.ctx))
	}
	if peer := peerOfReply(x.head.first()); peer != 0 {
		return fmt.Errorf("%s: %w", op, &WrongPortError{Addr: x.addr, Peer: peer, Err: err})
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("%s: director admin port %s stalled, nothing moved for %v: %w", op, x.addr, x.timeout, os.ErrDeadlineExceeded)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// readReply reads the director's text reply.
func (x *exchange) readReply() (*Message, error) {
	m, err := x.readText()
	if err != nil {
		return nil, x.fail("read reply", err)
	}
	return m, nil
}

// readText reads a text reply, returning errors for fail to describe.
func (x *exchange) readText() (*Message, error) {
	kind, err := PeekKind(x.br)
	if err != nil {
		return nil, noReply(err)
	}
	if kind != KindText {
		return nil, errBinaryReply
	}
	return ReadMessage(x.br, MaxTextSize)
}

// ErrNoReply means the server closed or reset the connection before a byte
// of the reply came: a director that serves TLS does so to a client that
// does not (see WrongPortError for what can be told apart).
var ErrNoReply = errors.New("director closed the connection without replying")

// noReply reports a connection that ended before the reply began.
func noReply(err error) error {
	switch {
	case errors.Is(err, io.EOF):
		return fmt.Errorf("%w: %w", ErrNoReply, io.ErrUnexpectedEOF)
	case errors.Is(err, syscall.ECONNRESET):
		return fmt.Errorf("%w: %w", ErrNoReply, dialCause(err))
	}
	return err
}

// connWriter remembers the first error writing to the connection, to tell a
// broken connection from a failing body.
type connWriter struct {
	w   io.Writer
	err error
}

func (cw *connWriter) Write(p []byte) (int, error) {
	n, err := cw.w.Write(p)
	if err != nil && cw.err == nil {
		cw.err = err
	}
	return n, err
}

// ALPN is the application protocol a Client that speaks TLS offers in its
// handshake (tls.Config.NextProtos). The director's admin port, which
// selects no protocol, ignores it; a gRPC server, which speaks "h2" only,
// refuses the handshake, and the client can say that it dialled the
// director's gRPC port rather than failing after the handshake with
// nothing to go on. A server that selects protocols must list it.
const ALPN = "fedplane-admin"

// Peer is what answered a Client where an admin port was expected.
type Peer int

// What can answer instead of an admin port, told from the handshake's
// error or the first bytes of the reply.
const (
	// PeerGRPC is an HTTP/2 server, in the clear or behind TLS: the
	// director's gRPC port, most likely.
	PeerGRPC Peer = iota + 1
	// PeerTLS is a server that speaks TLS, to a client that does not.
	PeerTLS
	// PeerPlaintext is a server that does not speak TLS, to a client that
	// does.
	PeerPlaintext
)

// WrongPortError is the error of an exchange with a server that is not an
// admin port the client can talk to: another protocol's server, or an
// admin port on the other side of TLS.
type WrongPortError struct {
	Addr string
	Peer Peer
	Err  error // what the exchange met
}

func (e *WrongPortError) Error() string {
	switch e.Peer {
	case PeerGRPC:
		return fmt.Sprintf("%s is not an admin port: it speaks HTTP/2, as the director's gRPC port does", e.Addr)
	case PeerTLS:
		return fmt.Sprintf("%s speaks TLS and this client does not", e.Addr)
	default:
		return fmt.Sprintf("%s does not speak TLS and this client does", e.Addr)
	}
}

func (e *WrongPortError) Unwrap() error { return e.Err }

// peerOfHandshake tells, from the error of a client's TLS handshake, a
// server that does not speak TLS (its first bytes, which crypto/tls keeps,
// are no TLS record) or speaks HTTP/2 only (it refused ALPN).
func peerOfHandshake(err error) Peer {
	var rh tls.RecordHeaderError
	if errors.As(err, &rh) {
		if isHTTP2Frame(rh.RecordHeader[:]) {
			return PeerGRPC // a gRPC port without TLS
		}
		return PeerPlaintext
	}
	// crypto/tls reports the peer's alert only as text.
	if strings.Contains(err.Error(), "tls: no application protocol") {
		return PeerGRPC
	}
	return 0
}

// peerOfReply tells another protocol from the first bytes of a reply: an
// admin reply starts with JSON or the binary marker, never with these.
func peerOfReply(first []byte) Peer {
	switch {
	case isHTTP2Frame(first):
		return PeerGRPC
	case len(first) >= 2 && (first[0] == tlsAlert || first[0] == tlsHandshake) && first[1] == 3:
		return PeerTLS // a TLS record: an alert, or a server's hello
	}
	return 0
}

// The TLS record types a TLS server answers a client in the clear with.
const (
	tlsAlert     = 0x15
	tlsHandshake = 0x16
)

// isHTTP2Frame reports whether b starts like the first frame an HTTP/2
// server sends, a SETTINGS frame (type 4) on stream 0, or a GOAWAY (7);
// the first 5 bytes are enough: a 3-byte length, the type and the flags.
func isHTTP2Frame(b []byte) bool {
	if len(b) < 5 || b[0] != 0 {
		return false
	}
	switch b[3] {
	case 0x4: // SETTINGS: no flags but ACK
		return b[4]&^0x1 == 0
	case 0x7: // GOAWAY: no flags
		return b[4] == 0
	}
	return false
}

// headReader keeps the first bytes read through it.
type headReader struct {
	r    io.Reader
	head [16]byte
	n    int
}

func (h *headReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	if h.n < len(h.head) {
		h.n += copy(h.head[h.n:], p[:n])
	}
	return n, err
}

// first returns the bytes read so far, up to 16.
func (h *headReader) first() []byte { return h.head[:h.n] }
