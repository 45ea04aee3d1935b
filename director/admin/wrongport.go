package admin

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc/codes"

	"github.com/fedplane/fedplane/adminproto"
)

// What the admin port tells a client that dialled it by mistake: an envoy or
// a frontend (gRPC, which opens with the HTTP/2 preface), a client speaking
// TLS to a port that serves without, a client in the clear on a port that
// serves TLS, or a browser or curl. The functions below classify the first
// bytes of a connection and answer in the client's own protocol, so that
// the client can print what is wrong rather than a protocol error.
//
// How the admin listener uses them:
//
//   - Without TLS, before reading the request: peek wrongPortPeekLen bytes
//     (bufio.Reader.Peek leaves them unread); if wrongPortReply classifies
//     them, log msg and call answerWrongPort with the connection, reading
//     from the bufio.Reader, instead of serving the exchange.
//   - With TLS, run the handshake on a handshakeRecorder around the accepted
//     connection (tls.Server(rec, cfg) in place of tls.NewListener), and
//     call its stop once the handshake is over. When the handshake fails
//     with a tls.RecordHeaderError whose Conn is set (the client's first
//     bytes were no TLS record; crypto/tls has sent nothing yet): if
//     plaintextOnTLSReply classifies its RecordHeader, log msg and call
//     answerWrongPort with rec.replay() to read and the connection to
//     write. crypto/tls reads more than the 5 bytes it reports, which the
//     recorder keeps.
//
// Set an absolute deadline on the connection first (not one that moves with
// each byte): answerWrongPort reads what the client sends before it
// answers, at most maxWrongPortRead bytes.

// wrongPortPeekLen is how many first bytes wrongPortReply needs. Every admin
// exchange is at least this long (the shortest, a text request "{}" ETX
// EOT), so peeking this much never waits on an admin client.
const wrongPortPeekLen = 4

// The client protocols the admin port can tell from its first bytes.
type wrongPeer int

const (
	peerAdmin wrongPeer = iota // an admin exchange: JSON text or a binary frame
	peerGRPC                   // the HTTP/2 client preface
	peerTLS                    // a TLS handshake record
	peerHTTP                   // an HTTP/1 request line
	peerOther
)

// peerOf classifies the first bytes of a connection.
func peerOf(first []byte) wrongPeer {
	switch {
	case len(first) == 0:
		return peerOther
	case len(first) >= 4 && strings.HasPrefix(http2.ClientPreface, string(first[:min(len(first), len(http2.ClientPreface))])):
		return peerGRPC // "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", or its start
	case len(first) >= 3 && first[0] == 0x16 && first[1] == 3 && first[2] <= 4:
		return peerTLS // record type handshake, version 3.x: a ClientHello
	case isHTTPRequest(first):
		return peerHTTP
	case first[0] == adminproto.BinaryMarker || first[0] == '{' || first[0] == ' ' || first[0] == '\t' || first[0] == '\r' || first[0] == '\n':
		return peerAdmin
	}
	return peerOther
}

// isHTTPRequest reports whether first starts with an HTTP/1 method.
func isHTTPRequest(first []byte) bool {
	for _, m := range []string{"GET ", "HEAD", "POST", "PUT ", "DELE", "OPTI", "PATC", "CONN", "TRAC"} {
		if len(first) >= len(m) && string(first[:len(m)]) == m {
			return true
		}
	}
	return false
}

// wrongPortReply classifies the first bytes read on the admin port when it
// serves without TLS (at least wrongPortPeekLen of them). For a client that
// is not an admin client it returns ok and a message that says what
// connected and what to do, for the log and for the client; for what may
// be an admin exchange it returns false, and the port serves it as usual.
func wrongPortReply(first []byte) (msg string, ok bool) {
	switch peerOf(first) {
	case peerGRPC:
		return "this is the fedplane director's admin port, for fladmin, and it got a gRPC connection: " +
			"point envoys and frontends at the director's gRPC port (director serve --grpc-listen)", true
	case peerTLS:
		return "this is the fedplane director's admin port and it serves without TLS, but got a TLS handshake: " +
			"leave out fladmin's --tls-ca, --tls-cert and --tls-key, or start the director with them", true
	case peerHTTP:
		return "this is the fedplane director's admin port: it speaks FLARE's admin protocol to fladmin, not HTTP", true
	}
	return "", false
}

// plaintextOnTLSReply classifies the first bytes of a client in the clear
// on the admin port when it serves TLS: the 5 bytes of a
// tls.RecordHeaderError's RecordHeader. ok and msg are as wrongPortReply's.
// What may be neither an admin, gRPC nor HTTP client gets false: the
// handshake error alone is logged.
func plaintextOnTLSReply(header []byte) (msg string, ok bool) {
	switch peerOf(header) {
	case peerAdmin:
		return "this fedplane director's admin port serves TLS, and the request came in the clear: " +
			"give fladmin --tls-ca, --tls-cert and --tls-key (an admin certificate from director pki issue --kind admin)", true
	case peerGRPC:
		return "this is the fedplane director's admin port, for fladmin, and it got a gRPC connection in the clear: " +
			"point envoys and frontends at the director's gRPC port (director serve --grpc-listen), with --tls-ca, --tls-cert and --tls-key", true
	case peerHTTP:
		return "this is the fedplane director's admin port: it serves TLS and FLARE's admin protocol to fladmin, not HTTP", true
	}
	return "", false
}

// answerWrongPort answers the client whose connection rw is, reading from
// its first byte, with msg in the client's protocol: a gRPC client gets an
// Unavailable status with msg as its message (after the HTTP/2 preface and
// its first request's headers are read), an HTTP client a 400 response, an
// admin client or one speaking TLS an admin error reply, which a TLS client
// then reports as a server that does not speak TLS. It reads at most what
// the client sends before it waits for an answer.
func answerWrongPort(rw io.ReadWriter, msg string) error {
	// A peer that is not an admin client has not shown who it is: read
	// little of it, and in small pieces.
	br := bufio.NewReader(io.LimitReader(rw, maxWrongPortRead))
	first, _ := br.Peek(wrongPortPeekLen)
	switch peerOf(first) {
	case peerGRPC:
		return answerGRPC(br, rw, msg)
	case peerHTTP:
		_, err := fmt.Fprintf(rw, "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s\n", len(msg)+1, msg)
		return err
	case peerAdmin:
		// Read what the client sent first, so that closing the connection
		// does not reset it before the client has read the answer. An
		// upload's body is not read: its client reads the reply while it
		// sends.
		if first[0] != adminproto.BinaryMarker {
			adminproto.ReadMessage(br, maxWrongPortRead)
		}
	case peerTLS:
		// The ClientHello: a record header, whose last two bytes are the
		// length of the record.
		if hdr, err := br.Peek(5); err == nil {
			br.Discard(5 + (int(hdr[3])<<8 | int(hdr[4])))
		}
	}
	return adminproto.WriteMessage(rw, &adminproto.Message{
		Data: []adminproto.Item{{Type: adminproto.TypeError, Data: msg}},
		Meta: map[string]any{"status": adminproto.StatusError, "info": msg},
	})
}

// maxWrongPortRead bounds what answerWrongPort reads of a peer, and
// minMaxFrameSize is the largest HTTP/2 frame it accepts (the smallest
// SETTINGS_MAX_FRAME_SIZE HTTP/2 allows).
const (
	maxWrongPortRead = 64 << 10
	minMaxFrameSize  = 16 << 10
)

// maxGRPCFrames bounds the frames answerGRPC reads before the request's
// headers: a client sends its settings, perhaps a window update, then them.
const maxGRPCFrames = 8

// answerGRPC speaks just enough HTTP/2 to fail a gRPC client's first call
// with msg: the server's settings, which the client waits for before it
// sends a request, then a trailers-only response to the request, then
// GOAWAY.
func answerGRPC(r io.Reader, w io.Writer, msg string) error {
	preface := make([]byte, len(http2.ClientPreface))
	if _, err := io.ReadFull(r, preface); err != nil {
		return err
	}
	if string(preface) != http2.ClientPreface {
		return errors.New("not an HTTP/2 client preface")
	}
	fr := http2.NewFramer(w, r)
	// Refuse, before allocating it, any frame larger than HTTP/2's
	// smallest maximum; a client's settings and headers fit.
	fr.SetMaxReadFrameSize(minMaxFrameSize)
	if err := fr.WriteSettings(); err != nil {
		return err
	}
	for range maxGRPCFrames {
		f, err := fr.ReadFrame()
		if err != nil {
			return err
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				if err := fr.WriteSettingsAck(); err != nil {
					return err
				}
			}
		case *http2.HeadersFrame:
			var block bytes.Buffer
			enc := hpack.NewEncoder(&block)
			for _, hf := range []hpack.HeaderField{
				{Name: ":status", Value: "200"},
				{Name: "content-type", Value: "application/grpc"},
				{Name: "grpc-status", Value: strconv.Itoa(int(codes.Unavailable))},
				{Name: "grpc-message", Value: grpcMessage(msg)},
			} {
				if err := enc.WriteField(hf); err != nil {
					return err
				}
			}
			if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: f.StreamID, BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
				return err
			}
			return fr.WriteGoAway(f.StreamID, http2.ErrCodeNo, nil)
		}
	}
	return errors.New("no request headers from the gRPC client")
}

// grpcMessage percent-encodes msg for the grpc-message header, as the gRPC
// wire spec asks for bytes outside printable ASCII and for '%'.
func grpcMessage(msg string) string {
	var b []byte
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c < ' ' || c > '~' || c == '%' {
			b = fmt.Appendf(b, "%%%02X", c)
		} else {
			b = append(b, c)
		}
	}
	return string(b)
}

// maxRecorded bounds what a handshakeRecorder keeps: crypto/tls reads a
// client's first record, at most 5 bytes and 16 KiB, before it fails.
const maxRecorded = 32 << 10

// handshakeRecorder is a connection that keeps what is read from it until
// stop, so that a client in the clear on the TLS admin port can be answered
// from its first byte although crypto/tls has read it.
type handshakeRecorder struct {
	net.Conn
	mu      sync.Mutex
	read    []byte
	stopped bool
}

func (r *handshakeRecorder) Read(p []byte) (int, error) {
	n, err := r.Conn.Read(p)
	r.mu.Lock()
	if !r.stopped && len(r.read) < maxRecorded {
		r.read = append(r.read, p[:min(n, maxRecorded-len(r.read))]...)
	}
	r.mu.Unlock()
	return n, err
}

// stop ends the recording and drops what was kept.
func (r *handshakeRecorder) stop() {
	r.mu.Lock()
	r.stopped, r.read = true, nil
	r.mu.Unlock()
}

// replay returns a reader of the connection from its first byte: what was
// recorded, then the connection. Call it after a failed handshake, before
// stop.
func (r *handshakeRecorder) replay() io.Reader {
	r.mu.Lock()
	defer r.mu.Unlock()
	return io.MultiReader(bytes.NewReader(bytes.Clone(r.read)), r.Conn)
}
