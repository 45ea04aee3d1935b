// Package adminproto implements the wire protocol of the director's admin
// port, byte-for-byte compatible with the binary and text exchanges of NVIDIA
// FLARE 2.5/2.6 (nvflare/fuel/hci/binary_proto.py and proto.py), so that
// fladmin and the director can talk to each other and to FLARE tools.
//
// An exchange is either binary or text; its first byte tells which. A binary
// exchange starts with BinaryMarker:
//
//	offset  size       field
//	0       1          marker      BinaryMarker (0x01)
//	1       4          meta_size   uint32, big-endian, at most MaxMetaSize
//	5       8          body_size   uint64, big-endian
//	13      meta_size  meta        UTF-8 text, usually JSON (may be empty)
//	..      body_size  body        raw bytes (a body of size 0 means no data)
//	..      4          end_marker  uint32, big-endian, always 0
//	..      4          checksum    uint32, big-endian, CRC-32/IEEE of the body only
//
// The first HeaderSize bytes are the header and the last FooterSize bytes the
// footer. Bodies (job archives, results) can be large, so both sides stream
// them and never hold one in memory; the footer lets the receiver know the
// body arrived whole before it acts on it.
//
// Any other first byte starts a text exchange, and that byte is part of the
// text: one or more JSON documents, each followed by ETX, and then EOT:
//
//	{"time": "...", "data": [{"type": "command", "data": "list_jobs"}], "meta": {}} ETX EOT
//
// A connection carries one request and one reply (the FLARE 2.6 pattern): a
// text command gets a text reply, an upload is a binary request with a text
// reply, and a download is a text request with a binary reply.
//
// The package knows the framing and the JSON envelope (Message), not the
// commands carried in it.
package adminproto

import (
	"bufio"
	"errors"
	"fmt"
	"sync"
)

// Frame layout and limits.
const (
	// BinaryMarker is the first byte of a binary exchange.
	BinaryMarker = 0x01
	// HeaderSize is the size of the binary header: marker, meta_size and
	// body_size.
	HeaderSize = 13
	// FooterSize is the size of the binary footer: end marker and checksum.
	FooterSize = 8
	// ETX ends each JSON document of a text exchange.
	ETX = 0x03
	// EOT ends a text exchange.
	EOT = 0x04
	// MaxMetaSize is the largest meta a binary exchange may carry. The meta
	// is held in memory, so a receiver refuses a larger one before reading it.
	MaxMetaSize = 1 << 20
	// MaxTextSize is the largest text message, without its EOT, that
	// WriteText sends and ReadText accepts by default.
	MaxTextSize = 16 << 20
)

// Errors that callers can test for with errors.Is. Truncated input is
// reported as an error wrapping io.ErrUnexpectedEOF.
var (
	// ErrChecksum means a binary body does not match the checksum in its
	// footer: the body was damaged and must not be used.
	ErrChecksum = errors.New("checksum mismatch")

	// ErrFooter means a binary frame's end marker is not 0, so the stream is
	// out of step with the frame layout (the declared body size is wrong).
	ErrFooter = errors.New("bad end marker")

	// ErrTooLarge means a meta, body or text message is over its limit. It is
	// reported before anything of that size is allocated or read.
	ErrTooLarge = errors.New("too large")

	// ErrMarker means a binary exchange does not start with BinaryMarker.
	ErrMarker = errors.New("bad marker")
)

// Kind is the kind of an exchange, told by its first byte.
type Kind int

// The kinds of exchange.
const (
	// KindText is a text exchange: JSON documents ended by ETX, then EOT.
	KindText Kind = iota
	// KindBinary is a binary exchange that starts with BinaryMarker.
	KindBinary
)

// String returns "text" or "binary".
func (k Kind) String() string {
	switch k {
	case KindText:
		return "text"
	case KindBinary:
		return "binary"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// PeekKind tells the kind of the exchange that br is at by peeking at its
// first byte, which it leaves unread: ReadBinary expects the marker and a text
// exchange's first byte is part of the text. At the end of the stream the
// error wraps io.EOF.
func PeekKind(br *bufio.Reader) (Kind, error) {
	b, err := br.Peek(1)
	if err != nil {
		return KindText, fmt.Errorf("peek exchange kind: %w", err)
	}
	if b[0] == BinaryMarker {
		return KindBinary, nil
	}
	return KindText, nil
}

// copyBufSize is the buffer size for streaming a body. Bodies are archives of
// megabytes to gigabytes; 256 KiB buffers keep the per-call overhead (CRC
// setup, syscalls, deadline updates) small next to the copying.
const copyBufSize = 256 << 10

var copyBufPool = sync.Pool{
	New: func() any {
		b := make([]byte, copyBufSize)
		return &b
	},
}

func getCopyBuf() *[]byte  { return copyBufPool.Get().(*[]byte) }
func putCopyBuf(b *[]byte) { copyBufPool.Put(b) }
