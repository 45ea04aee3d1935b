package adminproto

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"
	"testing/iotest"
)

// FuzzReadBinary checks that ReadBinary never panics on arbitrary input, that
// whatever it accepts re-encodes to the very bytes it consumed, and that
// decode(encode(meta, body)) gives back meta and body.
func FuzzReadBinary(f *testing.F) {
	for _, tt := range binaryCases(f) {
		if len(tt.frame) > 4096 {
			continue
		}
		f.Add(tt.frame, []byte(tt.wantMeta), []byte(tt.wantBody))
	}
	f.Fuzz(func(t *testing.T, data, meta, body []byte) {
		// Arbitrary input.
		r := bytes.NewReader(data)
		bin, err := ReadBinary(r, 1<<16)
		if err == nil {
			var out bytes.Buffer
			n, err := bin.CopyBody(&out)
			if uint64(n) > bin.BodySize {
				t.Fatalf("copied %d bytes of a body of %d", n, bin.BodySize)
			}
			if err == nil {
				consumed := data[:len(data)-r.Len()]
				if enc := mustEncodeBinary(t, bin.Meta, out.Bytes()); !bytes.Equal(consumed, enc) {
					t.Fatalf("accepted %x, which re-encodes as %x", consumed, enc)
				}
			}
		}

		// Round trip.
		if len(meta) > MaxMetaSize {
			return
		}
		frame := mustEncodeBinary(t, meta, body)
		if got, want := len(frame), HeaderSize+len(meta)+len(body)+FooterSize; got != want {
			t.Fatalf("frame is %d bytes, want %d", got, want)
		}
		r = bytes.NewReader(frame)
		bin, err = ReadBinary(iotest.HalfReader(r), uint64(len(body)))
		if err != nil {
			t.Fatalf("ReadBinary: %v", err)
		}
		gotBody, err := io.ReadAll(bin.Body())
		if err != nil {
			t.Fatalf("read body: %v", err)
		}
		if !bytes.Equal(bin.Meta, meta) || !bytes.Equal(gotBody, body) {
			t.Fatalf("got %q, %q, want %q, %q", bin.Meta, gotBody, meta, body)
		}
		if r.Len() != 0 {
			t.Fatalf("left %d bytes unread, want 0", r.Len())
		}
	})
}

// FuzzReadText checks ReadText against a plain search for EOT on arbitrary
// input, and that documents without control bytes survive WriteText,
// ReadText and SplitText.
func FuzzReadText(f *testing.F) {
	for _, tt := range textCases {
		f.Add([]byte(tt.in), []byte(`{"a":1}`), []byte(tt.want))
	}
	f.Add([]byte{}, []byte{}, []byte{})
	f.Add([]byte("\x04"), []byte("é"), []byte("日本"))
	f.Fuzz(func(t *testing.T, data, a, b []byte) {
		// Arbitrary input, through a small buffer so that messages span
		// several of its fills.
		const limit = 64
		r := bytes.NewReader(data)
		br := bufio.NewReaderSize(r, 16)
		msg, err := ReadText(br, limit)
		end := bytes.IndexByte(data, EOT)
		switch {
		case end > limit || (end < 0 && len(data) > limit):
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("got %q, %v, want an error wrapping %v", msg, err, ErrTooLarge)
			}
		case end < 0:
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("got %q, %v, want an error wrapping %v", msg, err, io.ErrUnexpectedEOF)
			}
		default:
			if err != nil || !bytes.Equal(msg, data[:end]) {
				t.Fatalf("got %q, %v, want %q", msg, err, data[:end])
			}
			if consumed := len(data) - r.Len() - br.Buffered(); consumed != end+1 {
				t.Fatalf("consumed %d bytes, want %d", consumed, end+1)
			}
		}

		// Round trip.
		if bytes.ContainsAny(a, "\x03\x04") || bytes.ContainsAny(b, "\x03\x04") {
			return
		}
		var buf bytes.Buffer
		if err := WriteText(&buf, a, b); err != nil {
			t.Fatalf("WriteText: %v", err)
		}
		msg, err = ReadText(iotest.OneByteReader(&buf), 0)
		if err != nil {
			t.Fatalf("ReadText: %v", err)
		}
		if got, want := SplitText(msg), [][]byte{a, b}; len(got) != 2 || !bytes.Equal(got[0], a) || !bytes.Equal(got[1], b) {
			t.Fatalf("got %q, want %q", got, want)
		}
	})
}

// FuzzDecodeMessage checks that DecodeMessage never panics, and that what it
// accepts encodes to a document that decodes to the same Message and
// re-encodes identically.
func FuzzDecodeMessage(f *testing.F) {
	for _, tt := range messageDocs {
		f.Add([]byte(tt.doc))
	}
	f.Fuzz(func(t *testing.T, doc []byte) {
		m, err := DecodeMessage(doc)
		if err != nil {
			return
		}
		m.Command()
		m.Status()
		m.Info()
		enc, err := EncodeMessage(m)
		if err != nil {
			t.Fatalf("EncodeMessage of %q: %v", doc, err)
		}
		var buf bytes.Buffer
		if err := WriteText(&buf, enc); err != nil {
			t.Fatalf("WriteText: %v", err)
		}
		m2, err := ReadMessage(&buf, 0)
		if err != nil {
			t.Fatalf("ReadMessage of %q: %v", enc, err)
		}
		enc2, err := EncodeMessage(m2)
		if err != nil {
			t.Fatalf("EncodeMessage: %v", err)
		}
		if !bytes.Equal(enc, enc2) {
			t.Fatalf("encoded %q, then %q", enc, enc2)
		}
		m3, err := DecodeMessage(enc2)
		if err != nil || !reflect.DeepEqual(m2, m3) {
			t.Fatalf("decoded %+v, then %+v (%v)", m2, m3, err)
		}
	})
}
