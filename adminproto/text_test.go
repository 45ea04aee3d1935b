package adminproto

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

// textCases are inputs for the table test of ReadText and the seeds of
// FuzzReadText.
var textCases = []struct {
	name    string
	in      string
	max     int
	want    string
	wantErr string
	wantIs  error
}{
	{name: "one document", in: "{}\x03\x04", want: "{}\x03"},
	{name: "two documents", in: `{"a":1}` + "\x03" + `{"b":2}` + "\x03\x04", want: `{"a":1}` + "\x03" + `{"b":2}` + "\x03"},
	{name: "empty message", in: "\x04", want: ""},
	{name: "bytes after EOT are left", in: "{}\x03\x04trailing", want: "{}\x03"},
	{name: "UTF-8", in: `{"s":"été 日本 🙂"}` + "\x03\x04", want: `{"s":"été 日本 🙂"}` + "\x03"},
	{name: "exactly at the limit", in: "0123456789\x04", max: 10, want: "0123456789"},
	{name: "long message", in: strings.Repeat("x", 5000) + "\x04", max: 5000, want: strings.Repeat("x", 5000)},
	{
		name:    "over the limit",
		in:      "0123456789A\x04",
		max:     10,
		wantErr: "text message is too large (limit 10 bytes)",
		wantIs:  ErrTooLarge,
	},
	{
		name:    "over the limit without EOT",
		in:      strings.Repeat("x", 5000),
		max:     100,
		wantErr: "text message is too large (limit 100 bytes)",
		wantIs:  ErrTooLarge,
	},
	{name: "no EOT", in: "{}\x03", wantErr: "truncated text message: unexpected EOF", wantIs: io.ErrUnexpectedEOF},
	{name: "nothing", in: "", wantErr: "truncated text message: unexpected EOF", wantIs: io.ErrUnexpectedEOF},
}

func TestReadText(t *testing.T) {
	readers := []struct {
		name string
		wrap func(io.Reader) io.Reader
	}{
		{"plain", func(r io.Reader) io.Reader { return r }},
		{"one byte", iotest.OneByteReader},
		{"data and error", iotest.DataErrReader},
		{"small bufio", func(r io.Reader) io.Reader { return bufio.NewReaderSize(r, 16) }},
		{"small bufio one byte", func(r io.Reader) io.Reader {
			return bufio.NewReaderSize(iotest.OneByteReader(r), 16)
		}},
	}
	for _, tt := range textCases {
		for _, rd := range readers {
			t.Run(tt.name+"/"+rd.name, func(t *testing.T) {
				got, err := ReadText(rd.wrap(strings.NewReader(tt.in)), tt.max)
				if tt.wantErr == "" {
					if err != nil {
						t.Fatalf("got error %v, want none", err)
					}
					if string(got) != tt.want {
						t.Errorf("got %q, want %q", got, tt.want)
					}
					if got == nil {
						t.Errorf("got nil, want a non-nil message")
					}
					return
				}
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("got error %v, want %q", err, tt.wantErr)
				}
				if !errors.Is(err, tt.wantIs) {
					t.Errorf("got %v, want an error wrapping %v", err, tt.wantIs)
				}
			})
		}
	}
}

// ReadText from a *bufio.Reader consumes the message and its EOT and nothing
// more.
func TestReadTextLeavesTheRest(t *testing.T) {
	br := bufio.NewReaderSize(strings.NewReader("first\x03\x04second\x03\x04\x01"), 16)
	for _, want := range []string{"first\x03", "second\x03"} {
		got, err := ReadText(br, 0)
		if err != nil || string(got) != want {
			t.Errorf("got %q, %v, want %q", got, err, want)
		}
	}
	if rest, _ := io.ReadAll(br); string(rest) != "\x01" {
		t.Errorf("got %q left, want %q", rest, "\x01")
	}
}

// A multi-byte character split across reads arrives whole, since ReadText
// does not decode until the message is complete.
func TestReadTextSplitUTF8(t *testing.T) {
	want := &Message{Time: "t", Data: []Item{{Type: TypeString, Data: "été, 日本語, 🙂🙂🙂"}}, Meta: map[string]any{"info": "ü"}}
	doc, err := EncodeMessage(want)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteText(&buf, doc); err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{16, 17, 18, 19} {
		r := bufio.NewReaderSize(iotest.OneByteReader(bytes.NewReader(buf.Bytes())), size)
		got, err := ReadMessage(r, 0)
		if err != nil {
			t.Fatalf("buffer %d: ReadMessage: %v", size, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("buffer %d: got %+v, want %+v", size, got, want)
		}
	}
}

func TestSplitText(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"", nil},
		{"\x03", []string{""}},
		{"{}\x03", []string{"{}"}},
		{"{}", []string{"{}"}},
		{"a\x03b\x03", []string{"a", "b"}},
		{"a\x03\x03", []string{"a", ""}},
		{"a\x03b", []string{"a", "b"}},
	}
	for _, tt := range tests {
		t.Run(strings.ReplaceAll(tt.in, "\x03", "<ETX>"), func(t *testing.T) {
			var got []string
			for _, d := range SplitText([]byte(tt.in)) {
				got = append(got, string(d))
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestWriteText(t *testing.T) {
	tests := []struct {
		name    string
		docs    []string
		want    string
		wantErr string
		wantIs  error
	}{
		{name: "one document", docs: []string{"{}"}, want: "{}\x03\x04"},
		{name: "two documents", docs: []string{`{"a":1}`, `{"b":2}`}, want: `{"a":1}` + "\x03" + `{"b":2}` + "\x03\x04"},
		{name: "no documents", want: "\x04"},
		{name: "ETX in a document", docs: []string{"{}", "a\x03b"}, wantErr: "document 1 has a control byte 0x03 at offset 1"},
		{name: "EOT in a document", docs: []string{"\x04"}, wantErr: "document 0 has a control byte 0x04 at offset 0"},
		{
			name:    "over MaxTextSize",
			docs:    []string{strings.Repeat("x", MaxTextSize/2), strings.Repeat("x", MaxTextSize/2)},
			wantErr: "text message is too large (limit 16777216 bytes)",
			wantIs:  ErrTooLarge,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var docs [][]byte
			for _, d := range tt.docs {
				docs = append(docs, []byte(d))
			}
			var buf bytes.Buffer
			err := WriteText(&buf, docs...)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("got error %v, want none", err)
				}
				if got := buf.String(); got != tt.want {
					t.Errorf("got %q, want %q", got, tt.want)
				}
				return
			}
			if err == nil || err.Error() != tt.wantErr {
				t.Fatalf("got error %v, want %q", err, tt.wantErr)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("got %v, want an error wrapping %v", err, tt.wantIs)
			}
			if buf.Len() != 0 {
				t.Errorf("wrote %d bytes, want none", buf.Len())
			}
		})
	}
}

func TestTextRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		docs []string
	}{
		{"one", []string{`{"time":"","data":[],"meta":{}}`}},
		{"several", []string{`{"a":1}`, `{"b":"ü"}`, `{}`}},
		{"empty documents", []string{"", "x", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var docs [][]byte
			for _, d := range tt.docs {
				docs = append(docs, []byte(d))
			}
			var buf bytes.Buffer
			if err := WriteText(&buf, docs...); err != nil {
				t.Fatal(err)
			}
			msg, err := ReadText(iotest.OneByteReader(&buf), 0)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, d := range SplitText(msg) {
				got = append(got, string(d))
			}
			if !reflect.DeepEqual(got, tt.docs) {
				t.Errorf("got %q, want %q", got, tt.docs)
			}
		})
	}
}
