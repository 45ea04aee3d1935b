package adminproto

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"
)

// specVector is the frame for meta `{}` and body `hello` given in
// shared/spec/admin-wire.md.
const specVector = "01 00000002 0000000000000005 7b7d 68656c6c6f 00000000 3610a686"

func mustHex(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		tb.Fatalf("decode hex %q: %v", s, err)
	}
	return b
}

func mustEncodeBinary(tb testing.TB, meta, body []byte) []byte {
	tb.Helper()
	var buf bytes.Buffer
	if err := WriteBinary(&buf, meta, uint64(len(body)), bytes.NewReader(body)); err != nil {
		tb.Fatalf("WriteBinary: %v", err)
	}
	return buf.Bytes()
}

// header builds a binary header claiming the given sizes.
func header(metaSize uint32, bodySize uint64) []byte {
	h := make([]byte, HeaderSize)
	h[0] = BinaryMarker
	binary.BigEndian.PutUint32(h[1:5], metaSize)
	binary.BigEndian.PutUint64(h[5:13], bodySize)
	return h
}

// patch returns a copy of b with b[i] replaced by v.
func patch(b []byte, i int, v byte) []byte {
	c := bytes.Clone(b)
	c[i] = v
	return c
}

func TestCRC32CheckValue(t *testing.T) {
	if got, want := crc32.ChecksumIEEE([]byte("123456789")), uint32(0xCBF43926); got != want {
		t.Errorf("got 0x%08x, want 0x%08x", got, want)
	}
}

func TestWriteBinarySpecVector(t *testing.T) {
	var buf bytes.Buffer
	if err := WriteBinary(&buf, []byte("{}"), 5, strings.NewReader("hello")); err != nil {
		t.Fatalf("WriteBinary: %v", err)
	}
	if got, want := buf.Bytes(), mustHex(t, specVector); !bytes.Equal(got, want) {
		t.Errorf("got %x, want %x", got, want)
	}
}

func TestReadBinarySpecVector(t *testing.T) {
	bin, err := ReadBinary(bytes.NewReader(mustHex(t, specVector)), 1<<20)
	if err != nil {
		t.Fatalf("ReadBinary: %v", err)
	}
	if got, want := string(bin.Meta), "{}"; got != want {
		t.Errorf("meta: got %q, want %q", got, want)
	}
	if got, want := bin.BodySize, uint64(5); got != want {
		t.Errorf("body size: got %v, want %v", got, want)
	}
	var body bytes.Buffer
	n, err := bin.CopyBody(&body)
	if err != nil {
		t.Fatalf("CopyBody: %v", err)
	}
	if got, want := body.String(), "hello"; got != want || n != 5 {
		t.Errorf("body: got %q (%d bytes), want %q", got, n, want)
	}
}

func TestWriteBinary(t *testing.T) {
	tests := []struct {
		name     string
		meta     []byte
		bodySize uint64
		body     io.Reader
		want     []byte // the frame, if no error
		wantErr  string
		wantIs   error
	}{
		{
			name:     "spec vector",
			meta:     []byte("{}"),
			bodySize: 5,
			body:     strings.NewReader("hello"),
			want:     mustHex(t, specVector),
		},
		{
			name: "empty meta and body",
			body: strings.NewReader(""),
			want: append(header(0, 0), 0, 0, 0, 0, 0, 0, 0, 0),
		},
		{
			name: "nil body",
			want: append(header(0, 0), 0, 0, 0, 0, 0, 0, 0, 0),
		},
		{
			name:     "nil body with a size",
			bodySize: 1,
			wantErr:  "body ended after 0 of 1 bytes",
		},
		{
			name:     "one byte at a time",
			meta:     []byte("{}"),
			bodySize: 5,
			body:     iotest.OneByteReader(strings.NewReader("hello")),
			want:     mustHex(t, specVector),
		},
		{
			name:     "short body",
			bodySize: 5,
			body:     strings.NewReader("hel"),
			wantErr:  "body ended after 3 of 5 bytes",
		},
		{
			name:     "long body",
			bodySize: 5,
			body:     strings.NewReader("hello!"),
			wantErr:  "body is longer than the declared 5 bytes",
		},
		{
			name:     "body read error",
			bodySize: 5,
			body:     iotest.ErrReader(errors.New("disk on fire")),
			wantErr:  "read body: disk on fire",
		},
		{
			name:    "meta too large",
			meta:    make([]byte, MaxMetaSize+1),
			body:    strings.NewReader(""),
			wantErr: fmt.Sprintf("meta of %d bytes is too large (limit %d)", MaxMetaSize+1, MaxMetaSize),
			wantIs:  ErrTooLarge,
		},
		{
			name:     "body size over int64",
			bodySize: 1 << 63,
			body:     strings.NewReader(""),
			wantIs:   ErrTooLarge,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			err := WriteBinary(&buf, tt.meta, tt.bodySize, tt.body)
			if tt.wantErr == "" && tt.wantIs == nil {
				if err != nil {
					t.Fatalf("got error %v, want none", err)
				}
				if got := buf.Bytes(); !bytes.Equal(got, tt.want) {
					t.Errorf("got %x, want %x", got, tt.want)
				}
				return
			}
			if err == nil {
				t.Fatalf("got no error, want %q", tt.wantErr)
			}
			if tt.wantErr != "" && err.Error() != tt.wantErr {
				t.Errorf("got %q, want %q", err, tt.wantErr)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("got %v, want an error wrapping %v", err, tt.wantIs)
			}
		})
	}
}

func TestWriteBinaryWriteError(t *testing.T) {
	w := &failWriter{after: HeaderSize + 2 + 3}
	err := WriteBinary(w, []byte("{}"), 5, strings.NewReader("hello"))
	if got, want := fmt.Sprint(err), "write body: sink full"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// failWriter accepts after bytes and then fails.
type failWriter struct{ after int }

func (w *failWriter) Write(p []byte) (int, error) {
	if len(p) <= w.after {
		w.after -= len(p)
		return len(p), nil
	}
	n := w.after
	w.after = 0
	return n, errors.New("sink full")
}

// binaryCases are frames for the table test of ReadBinary and the seeds of
// FuzzReadBinary.
func binaryCases(tb testing.TB) []struct {
	name     string
	frame    []byte
	maxBody  uint64
	wantMeta string
	wantBody string
	wantErr  string // the error's text, from ReadBinary or from reading the body
	wantIs   error
} {
	vec := mustHex(tb, specVector)
	bodyStart := HeaderSize + 2
	footStart := bodyStart + 5
	badBody := patch(vec, bodyStart, 'j') // "jello"
	return []struct {
		name     string
		frame    []byte
		maxBody  uint64
		wantMeta string
		wantBody string
		wantErr  string
		wantIs   error
	}{
		{name: "spec vector", frame: vec, maxBody: 5, wantMeta: "{}", wantBody: "hello"},
		{name: "empty body", frame: mustEncodeBinary(tb, []byte(`{"a":1}`), nil), wantMeta: `{"a":1}`},
		{name: "empty meta and body", frame: mustEncodeBinary(tb, nil, nil)},
		{
			name:     "large body",
			frame:    mustEncodeBinary(tb, []byte("m"), bytes.Repeat([]byte("0123456789"), 100_000)),
			maxBody:  1 << 20,
			wantMeta: "m",
			wantBody: strings.Repeat("0123456789", 100_000),
		},
		{
			name:    "bad marker",
			frame:   patch(vec, 0, 0x02),
			maxBody: 5,
			wantErr: "bad marker 0x02, want 0x01",
			wantIs:  ErrMarker,
		},
		{name: "empty input", frame: nil, maxBody: 5, wantErr: "truncated header: unexpected EOF", wantIs: io.ErrUnexpectedEOF},
		{name: "truncated header", frame: vec[:7], maxBody: 5, wantErr: "truncated header: unexpected EOF", wantIs: io.ErrUnexpectedEOF},
		{name: "truncated meta", frame: vec[:HeaderSize+1], maxBody: 5, wantErr: "truncated meta: unexpected EOF", wantIs: io.ErrUnexpectedEOF},
		{
			name:    "truncated body",
			frame:   vec[:bodyStart+2],
			maxBody: 5,
			wantErr: "truncated body: got 2 of 5 bytes: unexpected EOF",
			wantIs:  io.ErrUnexpectedEOF,
		},
		{name: "no footer", frame: vec[:footStart], maxBody: 5, wantErr: "truncated footer: unexpected EOF", wantIs: io.ErrUnexpectedEOF},
		{name: "truncated footer", frame: vec[:len(vec)-1], maxBody: 5, wantErr: "truncated footer: unexpected EOF", wantIs: io.ErrUnexpectedEOF},
		{
			name:    "bad end marker",
			frame:   patch(vec, footStart+3, 0x01),
			maxBody: 5,
			wantErr: "bad end marker 0x00000001",
			wantIs:  ErrFooter,
		},
		{
			name:    "checksum mismatch",
			frame:   badBody,
			maxBody: 5,
			wantErr: fmt.Sprintf("checksum mismatch: frame says 0x3610a686, body has 0x%08x", crc32.ChecksumIEEE([]byte("jello"))),
			wantIs:  ErrChecksum,
		},
		{
			name:    "meta too large",
			frame:   header(MaxMetaSize+1, 0),
			wantErr: fmt.Sprintf("meta of %d bytes is too large (limit %d)", MaxMetaSize+1, MaxMetaSize),
			wantIs:  ErrTooLarge,
		},
		{
			name:    "meta of 4 GiB",
			frame:   header(0xFFFFFFFF, 0),
			wantErr: fmt.Sprintf("meta of %d bytes is too large (limit %d)", uint32(0xFFFFFFFF), MaxMetaSize),
			wantIs:  ErrTooLarge,
		},
		{
			name:    "body too large",
			frame:   vec,
			maxBody: 4,
			wantErr: "body of 5 bytes is too large (limit 4)",
			wantIs:  ErrTooLarge,
		},
		{
			name:    "body of 16 EiB",
			frame:   header(0, 1<<64-1),
			maxBody: 1 << 30,
			wantErr: fmt.Sprintf("body of %d bytes is too large (limit %d)", uint64(1<<64-1), 1<<30),
			wantIs:  ErrTooLarge,
		},
	}
}

func TestReadBinary(t *testing.T) {
	readers := []struct {
		name string
		wrap func(io.Reader) io.Reader
	}{
		{"whole", func(r io.Reader) io.Reader { return r }},
		{"one byte", iotest.OneByteReader},
		{"half", iotest.HalfReader},
		{"data and error", iotest.DataErrReader},
		{"bufio", func(r io.Reader) io.Reader { return bufio.NewReaderSize(r, 16) }},
	}
	for _, tt := range binaryCases(t) {
		for _, rd := range readers {
			t.Run(tt.name+"/"+rd.name, func(t *testing.T) {
				var body bytes.Buffer
				bin, err := ReadBinary(rd.wrap(bytes.NewReader(tt.frame)), tt.maxBody)
				if err == nil {
					if got := string(bin.Meta); tt.wantErr == "" && got != tt.wantMeta {
						t.Errorf("meta: got %q, want %q", got, tt.wantMeta)
					}
					_, err = bin.CopyBody(&body)
				}
				if tt.wantErr == "" {
					if err != nil {
						t.Fatalf("got error %v, want none", err)
					}
					if got := body.String(); got != tt.wantBody {
						t.Errorf("body: got %d bytes, want %d", len(got), len(tt.wantBody))
					}
					return
				}
				if err == nil {
					t.Fatalf("got no error, want %q", tt.wantErr)
				}
				if got := err.Error(); got != tt.wantErr {
					t.Errorf("got %q, want %q", got, tt.wantErr)
				}
				if !errors.Is(err, tt.wantIs) {
					t.Errorf("got %v, want an error wrapping %v", err, tt.wantIs)
				}
			})
		}
	}
}

// A header claiming a huge meta or body must be refused before anything of
// that size is allocated.
func TestReadBinaryRefusesBeforeAllocating(t *testing.T) {
	tests := []struct {
		name  string
		frame []byte
	}{
		{"meta of 4 GiB", header(0xFFFFFFFF, 0)},
		{"body of 16 EiB", header(0, 1<<64-1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := ReadBinary(bytes.NewReader(tt.frame), 1<<20)
			runtime.ReadMemStats(&after)
			if !errors.Is(err, ErrTooLarge) {
				t.Errorf("got %v, want an error wrapping %v", err, ErrTooLarge)
			}
			if got, want := after.TotalAlloc-before.TotalAlloc, uint64(64<<10); got > want {
				t.Errorf("allocated %v bytes, want at most %v", got, want)
			}
		})
	}
}

// The read that returns the last body byte also returns a bad frame's error,
// and the error sticks.
func TestBodyVerifiesWithLastByte(t *testing.T) {
	frame := patch(mustHex(t, specVector), HeaderSize+2, 'j')
	bin, err := ReadBinary(bytes.NewReader(frame), 5)
	if err != nil {
		t.Fatalf("ReadBinary: %v", err)
	}
	buf := make([]byte, 64)
	n, err := bin.Body().Read(buf)
	if n != 5 || !errors.Is(err, ErrChecksum) {
		t.Errorf("got %d, %v, want 5, an error wrapping %v", n, err, ErrChecksum)
	}
	n, err = bin.Body().Read(buf)
	if n != 0 || !errors.Is(err, ErrChecksum) {
		t.Errorf("second read: got %d, %v, want 0, an error wrapping %v", n, err, ErrChecksum)
	}
}

func TestBodyReader(t *testing.T) {
	body := bytes.Repeat([]byte("fedplane "), 5000)
	bin, err := ReadBinary(bytes.NewReader(mustEncodeBinary(t, nil, body)), 1<<20)
	if err != nil {
		t.Fatalf("ReadBinary: %v", err)
	}
	if err := iotest.TestReader(bin.Body(), body); err != nil {
		t.Error(err)
	}
}

// Frames read back to back: each body read to its end leaves the stream at
// the next frame.
func TestReadBinarySequence(t *testing.T) {
	var stream bytes.Buffer
	bodies := []string{"first", "", "third body"}
	for i, b := range bodies {
		stream.Write(mustEncodeBinary(t, []byte(fmt.Sprint(i)), []byte(b)))
	}
	stream.WriteString("{}\x03\x04")
	br := bufio.NewReader(&stream)
	for i, want := range bodies {
		kind, err := PeekKind(br)
		if err != nil || kind != KindBinary {
			t.Fatalf("frame %d: got kind %v (%v), want %v", i, kind, err, KindBinary)
		}
		bin, err := ReadBinary(br, 1<<10)
		if err != nil {
			t.Fatalf("frame %d: ReadBinary: %v", i, err)
		}
		if i == 1 {
			if err := bin.Discard(); err != nil {
				t.Fatalf("frame %d: Discard: %v", i, err)
			}
			continue
		}
		got, err := io.ReadAll(bin.Body())
		if err != nil {
			t.Fatalf("frame %d: read body: %v", i, err)
		}
		if string(got) != want {
			t.Errorf("frame %d: got %q, want %q", i, got, want)
		}
	}
	if kind, err := PeekKind(br); err != nil || kind != KindText {
		t.Fatalf("got kind %v (%v), want %v", kind, err, KindText)
	}
	msg, err := ReadText(br, 0)
	if err != nil || string(msg) != "{}\x03" {
		t.Errorf("got %q (%v), want %q", msg, err, "{}\x03")
	}
}

func TestPeekKind(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    Kind
		wantErr error
	}{
		{"binary", "\x01\x00", KindBinary, nil},
		{"text", "{}\x03\x04", KindText, nil},
		{"text of other bytes", "\x02", KindText, nil},
		{"empty", "", KindText, io.EOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			br := bufio.NewReader(strings.NewReader(tt.in))
			got, err := PeekKind(br)
			if got != tt.want || !errors.Is(err, tt.wantErr) {
				t.Errorf("got %v, %v, want %v, %v", got, err, tt.want, tt.wantErr)
			}
			if rest, _ := io.ReadAll(br); string(rest) != tt.in {
				t.Errorf("left %q unread, want %q", rest, tt.in)
			}
		})
	}
}
