package adminproto

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
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
// raw control characters) and a message over MaxTextSize bytes. The message
// goes out in a single Write; WriteText does not flush.
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
	msg := make([]byte, 0, size+1)
	for _, d := range docs {
		msg = append(msg, d...)
		msg = append(msg, ETX)
	}
	msg = append(msg, EOT)
	if _, err := w.Write(msg); err != nil {
		return fmt.Errorf("write text message: %w", err)
	}
	return nil
}
