package adminproto

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
)

// ReadText reads one text message from r: everything up to the EOT byte,
// which it consumes but does not return. The ETX bytes that end each document
// are kept; SplitText separates the documents. The bytes are returned as they
// came, undecoded, since a read can end in the middle of a UTF-8 character.
//
// A message longer than max bytes (MaxTextSize if max <= 0) is refused with
// an error wrapping ErrTooLarge as soon as that many bytes have arrived, so
// memory stays bounded by max. A stream that ends before EOT gives an error
// wrapping io.ErrUnexpectedEOF.
//
// If r is not a *bufio.Reader, ReadText wraps it in one and may read past the
// EOT; pass a *bufio.Reader when more is to be read from r afterwards.
func ReadText(r io.Reader, max int) ([]byte, error) {
	if max <= 0 {
		max = MaxTextSize
	}
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReader(r)
	}
	var msg []byte
	for {
		chunk, err := br.ReadSlice(EOT)
		n := len(chunk)
		if err == nil {
			n-- // the EOT
		}
		if n > max-len(msg) {
			return nil, fmt.Errorf("text message is %w (limit %d bytes)", ErrTooLarge, max)
		}
		msg = appendBounded(msg, chunk[:n], max)
		switch {
		case err == nil:
			if msg == nil {
				msg = []byte{}
			}
			return msg, nil
		case err == bufio.ErrBufferFull:
			// The message is longer than br's buffer; keep collecting.
		case err == io.EOF:
			return nil, fmt.Errorf("truncated text message: %w", io.ErrUnexpectedEOF)
		default:
			return nil, fmt.Errorf("read text message: %w", err)
		}
	}
}

// appendBounded appends p to b like append, but never lets the capacity grow
// past limit (len(b)+len(p) must not exceed it), so that the buffer of a
// message close to the limit is not doubled past it.
func appendBounded(b, p []byte, limit int) []byte {
	if need := len(b) + len(p); need > cap(b) {
		c := min(max(2*cap(b), need, 512), limit)
		nb := make([]byte, len(b), c)
		copy(nb, b)
		b = nb
	}
	return append(b, p...)
}

// docReader reads the first document of a text message as a stream: the
// bytes up to its ETX (or the EOT, if the message has no ETX), then io.EOF.
// It leaves the rest of the message unread. A document over max bytes gives
// an error wrapping ErrTooLarge, and a stream that ends first one wrapping
// io.ErrUnexpectedEOF.
type docReader struct {
	br   *bufio.Reader
	max  int
	n    int
	done bool
}

func (d *docReader) Read(p []byte) (int, error) {
	if d.done {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	if d.br.Buffered() == 0 {
		if _, err := d.br.Peek(1); err != nil {
			if err == io.EOF {
				return 0, fmt.Errorf("truncated text message: %w", io.ErrUnexpectedEOF)
			}
			return 0, fmt.Errorf("read text message: %w", err)
		}
	}
	buf, _ := d.br.Peek(min(d.br.Buffered(), len(p)))
	end := bytes.IndexAny(buf, "\x03\x04")
	if end >= 0 {
		buf = buf[:end]
	}
	n := copy(p, buf)
	d.br.Discard(n)
	d.n += n
	if d.n > d.max {
		return 0, fmt.Errorf("text message is %w (limit %d bytes)", ErrTooLarge, d.max)
	}
	if end >= 0 {
		d.br.Discard(1)
		d.done = true
		if n == 0 {
			return 0, io.EOF
		}
	}
	return n, nil
}

// SplitText splits a text message, as returned by ReadText, into its
// documents at the ETX bytes. A trailing empty piece (after the last ETX) is
// dropped. The documents share msg's memory.
func SplitText(msg []byte) [][]byte {
	docs := bytes.Split(msg, []byte{ETX})
	if last := len(docs) - 1; len(docs[last]) == 0 {
		docs = docs[:last]
	}
	if len(docs) == 0 {
		return nil
	}
	return docs
}

// WriteText writes a text message: each document followed by ETX, then EOT.
// It refuses a document that contains an ETX or EOT byte (JSON text never has
// raw control characters) and a message over MaxTextSize bytes. A message of
// up to 64 KiB goes out in a single Write, so a peer that answers and hangs
// up early still gets it whole; a larger one is not copied but written
// piece by piece (in one writev on a bare connection). WriteText does not
// flush.
func WriteText(w io.Writer, docs ...[]byte) error {
	size := 0
	for i, d := range docs {
		if j := bytes.IndexAny(d, "\x03\x04"); j >= 0 {
			return fmt.Errorf("document %d has a control byte 0x%02x at offset %d", i, d[j], j)
		}
		size += len(d) + 1
		if size > MaxTextSize {
			return fmt.Errorf("text message is %w (limit %d bytes)", ErrTooLarge, MaxTextSize)
		}
	}
	bufs := make(net.Buffers, 0, 2*len(docs)+1)
	if size < 64<<10 {
		msg := make([]byte, 0, size+1)
		for _, d := range docs {
			msg = append(append(msg, d...), ETX)
		}
		bufs = append(bufs, append(msg, EOT))
	} else {
		for _, d := range docs {
			bufs = append(bufs, d, etx)
		}
		bufs = append(bufs, eot)
	}
	if _, err := bufs.WriteTo(w); err != nil {
		return fmt.Errorf("write text message: %w", err)
	}
	return nil
}

// The one-byte pieces WriteText sends after documents.
var (
	etx = []byte{ETX}
	eot = []byte{EOT}
)
