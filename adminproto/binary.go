package adminproto

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"math"
)

// WriteBinary writes one binary exchange to w: the header, meta, exactly
// bodySize bytes streamed from body, and the footer with the CRC-32 of the
// body. The body is copied through a 256 KiB buffer and never held whole.
//
// WriteBinary reads one byte past bodySize to make sure body is not longer
// than declared, so body must end (return io.EOF) after bodySize bytes, as a
// file or an io.LimitReader does. A body that is shorter or longer is an
// error, and so is a meta over MaxMetaSize. A nil body is an empty one.
//
// WriteBinary does not flush: pass a raw connection, or a *bufio.Writer and
// flush it afterwards. After an error the frame on w is incomplete (it has no
// valid footer, so no receiver accepts it) and the stream is unusable.
func WriteBinary(w io.Writer, meta []byte, bodySize uint64, body io.Reader) error {
	if len(meta) > MaxMetaSize {
		return fmt.Errorf("meta of %d bytes is %w (limit %d)", len(meta), ErrTooLarge, MaxMetaSize)
	}
	if bodySize > math.MaxInt64 {
		return fmt.Errorf("body of %d bytes is %w (limit %d)", bodySize, ErrTooLarge, uint64(math.MaxInt64))
	}

	// Header and meta go out in one write, which on a raw connection is one
	// syscall instead of two.
	head := make([]byte, HeaderSize+len(meta))
	head[0] = BinaryMarker
	binary.BigEndian.PutUint32(head[1:5], uint32(len(meta)))
	binary.BigEndian.PutUint64(head[5:13], bodySize)
	copy(head[HeaderSize:], meta)
	if _, err := w.Write(head); err != nil {
		return fmt.Errorf("write header: %w", err)
	}

	if body == nil {
		body = bytes.NewReader(nil)
	}
	cw := &crcWriter{w: w}
	if bodySize > 0 {
		buf := getCopyBuf()
		n, err := io.CopyBuffer(cw, io.LimitReader(body, int64(bodySize)), *buf)
		putCopyBuf(buf)
		switch {
		case cw.err != nil:
			return fmt.Errorf("write body: %w", cw.err)
		case err != nil:
			return fmt.Errorf("read body: %w", err)
		case uint64(n) < bodySize:
			return fmt.Errorf("body ended after %d of %d bytes", n, bodySize)
		}
	}
	var one [1]byte
	switch n, err := io.ReadFull(body, one[:]); {
	case n > 0:
		return fmt.Errorf("body is longer than the declared %d bytes", bodySize)
	case err != io.EOF:
		return fmt.Errorf("read body: %w", err)
	}

	var foot [FooterSize]byte
	binary.BigEndian.PutUint32(foot[0:4], 0)
	binary.BigEndian.PutUint32(foot[4:8], cw.crc)
	if _, err := w.Write(foot[:]); err != nil {
		return fmt.Errorf("write footer: %w", err)
	}
	return nil
}

// crcWriter passes writes on to w, computing the CRC-32 of what was written.
// It deliberately has no ReadFrom, so io.CopyBuffer uses the pooled buffer.
type crcWriter struct {
	w   io.Writer
	crc uint32
	err error // the first error from w, to tell write errors from read errors
}

func (cw *crcWriter) Write(p []byte) (int, error) {
	n, err := cw.w.Write(p)
	cw.crc = crc32.Update(cw.crc, crc32.IEEETable, p[:n])
	if err != nil && cw.err == nil {
		cw.err = err
	}
	return n, err
}

// Binary is a binary exchange whose header and meta have been read. Its body
// is still on the stream: read it with Body, CopyBody or Discard, which also
// verify the footer.
type Binary struct {
	// Meta is the meta text, usually a JSON document.
	Meta []byte
	// BodySize is the declared size of the body.
	BodySize uint64

	body bodyReader
}

// ReadBinary reads the header and meta of a binary exchange from r, including
// the leading marker (after PeekKind, which leaves it unread). It refuses a
// meta over MaxMetaSize or a body over maxBody before reading or allocating
// either, with an error wrapping ErrTooLarge.
//
// The body is left on r: r must not be used until the body has been read to
// its end with the returned Binary. ReadBinary does not buffer, so pass a
// *bufio.Reader when reading from a connection.
func ReadBinary(r io.Reader, maxBody uint64) (*Binary, error) {
	var head [HeaderSize]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return nil, readErr("header", err)
	}
	if head[0] != BinaryMarker {
		return nil, fmt.Errorf("%w 0x%02x, want 0x%02x", ErrMarker, head[0], BinaryMarker)
	}
	metaSize := binary.BigEndian.Uint32(head[1:5])
	bodySize := binary.BigEndian.Uint64(head[5:13])
	if metaSize > MaxMetaSize {
		return nil, fmt.Errorf("meta of %d bytes is %w (limit %d)", metaSize, ErrTooLarge, MaxMetaSize)
	}
	if bodySize > maxBody {
		return nil, fmt.Errorf("body of %d bytes is %w (limit %d)", bodySize, ErrTooLarge, maxBody)
	}
	meta := make([]byte, metaSize)
	if _, err := io.ReadFull(r, meta); err != nil {
		return nil, readErr("meta", err)
	}
	return &Binary{
		Meta:     meta,
		BodySize: bodySize,
		body:     bodyReader{r: r, size: bodySize, remaining: bodySize},
	}, nil
}

// readErr reports a failed io.ReadFull of part of a frame: running out of
// input is truncation, anything else is the reader's own error.
func readErr(part string, err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return fmt.Errorf("truncated %s: %w", part, io.ErrUnexpectedEOF)
	}
	return fmt.Errorf("read %s: %w", part, err)
}

// Body returns a reader of the body: exactly BodySize bytes. Once it has
// returned the last byte it reads the footer, and instead of io.EOF it returns
// an error wrapping ErrFooter or ErrChecksum if the frame does not verify, so
// reading the body until io.EOF means it arrived whole. A stream that ends
// early gives an error wrapping io.ErrUnexpectedEOF.
//
// Every call returns the same reader.
func (b *Binary) Body() io.Reader { return &b.body }

// CopyBody copies the body to w through a pooled 256 KiB buffer and verifies
// the footer. It returns the number of bytes written and the first error
// writing, reading or verifying; on an error, what was written to w must not
// be used.
func (b *Binary) CopyBody(w io.Writer) (int64, error) {
	buf := getCopyBuf()
	defer putCopyBuf(buf)
	// writerOnly hides a ReadFrom of w (os.File, net.TCPConn, io.Discard),
	// which would copy through a smaller buffer of its own.
	return io.CopyBuffer(writerOnly{w}, &b.body, *buf)
}

// Discard reads the rest of the body, throwing it away, and verifies the
// footer, leaving the stream at the end of the frame.
func (b *Binary) Discard() error {
	_, err := b.CopyBody(io.Discard)
	return err
}

type writerOnly struct{ io.Writer }

// bodyReader reads a body of known size and verifies the footer after it.
type bodyReader struct {
	r         io.Reader
	size      uint64
	remaining uint64
	crc       uint32
	err       error // sticky: io.EOF once verified, or the error that ended the body
}

func (br *bodyReader) Read(p []byte) (int, error) {
	if br.err != nil {
		return 0, br.err
	}
	if br.remaining == 0 {
		br.err = br.verify()
		return 0, br.err
	}
	if uint64(len(p)) > br.remaining {
		p = p[:br.remaining]
	}
	n, err := br.r.Read(p)
	br.crc = crc32.Update(br.crc, crc32.IEEETable, p[:n])
	br.remaining -= uint64(n)
	switch {
	case br.remaining == 0:
		// Verify as soon as the last byte is in, so that the bytes of a bad
		// frame never come without its error.
		if verr := br.verify(); verr != io.EOF {
			br.err = verr
			return n, verr
		}
		br.err = io.EOF
		return n, nil
	case err == io.EOF:
		br.err = fmt.Errorf("truncated body: got %d of %d bytes: %w", br.size-br.remaining, br.size, io.ErrUnexpectedEOF)
	case err != nil:
		br.err = fmt.Errorf("read body: %w", err)
	}
	return n, br.err
}

// verify reads the footer and returns io.EOF if the frame is intact.
func (br *bodyReader) verify() error {
	var foot [FooterSize]byte
	if _, err := io.ReadFull(br.r, foot[:]); err != nil {
		return readErr("footer", err)
	}
	if end := binary.BigEndian.Uint32(foot[0:4]); end != 0 {
		return fmt.Errorf("%w 0x%08x", ErrFooter, end)
	}
	if sum := binary.BigEndian.Uint32(foot[4:8]); sum != br.crc {
		return fmt.Errorf("%w: frame says 0x%08x, body has 0x%08x", ErrChecksum, sum, br.crc)
	}
	return io.EOF
}
