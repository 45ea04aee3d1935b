package adminproto

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"reflect"
	"strings"
	"testing"
)

func TestReadMeta(t *testing.T) {
	tests := []struct {
		name    string
		doc     string
		want    map[string]string // key: raw JSON
		wantErr string
	}{
		{name: "reply", doc: `{"time":"t","data":[{"type":"table","rows":[["A"],["1"]]}],"meta":{"status":"ok","n":[1, 2]}}`,
			want: map[string]string{"status": `"ok"`, "n": `[1, 2]`}},
		{name: "meta first, spaces", doc: " { \"meta\" : { \"status\" : \"ok\" } , \"data\" : [ ] } \n", want: map[string]string{"status": `"ok"`}},
		{name: "null meta", doc: `{"meta":null}`, want: map[string]string{}},
		{name: "no meta", doc: `{"data":[]}`, want: map[string]string{}},
		{name: "meta in another case", doc: `{"Meta":{"status":"ok"}}`, want: map[string]string{"status": `"ok"`}},
		{name: "empty", doc: ``, wantErr: "decode reply: document is not a JSON object"},
		{name: "array", doc: `[]`, wantErr: "decode reply: document is not a JSON object"},
		{name: "meta not an object", doc: `{"meta":[1]}`, wantErr: "decode reply: meta is not a JSON object"},
		{name: "truncated", doc: `{"meta":{"status":`, wantErr: "decode reply: document ends early: unexpected EOF"},
		{name: "data after", doc: `{}{}`, wantErr: "decode reply: data after the document"},
		{name: "bad syntax", doc: `{"meta":{"a" 1}}`, wantErr: "decode reply: expected colon after object key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadMeta(strings.NewReader(tt.doc), nil)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("got %v, want error %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			gotRaw := map[string]string{}
			for k, v := range got {
				gotRaw[k] = string(v)
			}
			if !reflect.DeepEqual(gotRaw, tt.want) {
				t.Fatalf("got %v, want %v", gotRaw, tt.want)
			}
		})
	}
}

func TestReadMetaStream(t *testing.T) {
	doc := `{"meta":{"status":"ok","envoys":[{"name":"a"},{"name":"b"}],"info":"two"}}`
	var names []string
	meta, err := ReadMeta(strings.NewReader(doc), func(key string, dec *json.Decoder) (bool, error) {
		if key != "envoys" {
			return false, nil
		}
		if _, err := dec.Token(); err != nil {
			return true, err
		}
		for dec.More() {
			var e struct{ Name string }
			if err := dec.Decode(&e); err != nil {
				return true, err
			}
			names = append(names, e.Name)
		}
		_, err := dec.Token()
		return true, err
	})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(names, []string{"a", "b"}) || meta.Status() != "ok" || meta.Info() != "two" || meta["envoys"] != nil {
		t.Fatalf("got names %v, meta %v", names, meta)
	}
	_, err = ReadMeta(strings.NewReader(doc), func(key string, dec *json.Decoder) (bool, error) {
		return key == "envoys", errors.New("boom")
	})
	if err == nil || err.Error() != `decode reply: meta "status": boom` {
		t.Fatalf("got %v, want the streamer's error with its key", err)
	}
}

func TestMetaInto(t *testing.T) {
	m := Meta{"n": json.RawMessage(`3`), "s": json.RawMessage(`"x"`)}
	var n int
	if err := m.Into("n", &n); err != nil || n != 3 {
		t.Fatalf("got %d, %v", n, err)
	}
	if err := m.Into("missing", &n); err == nil || err.Error() != `reply meta has no "missing"` {
		t.Fatalf("got %v", err)
	}
	if err := m.Into("s", &n); err == nil || !strings.HasPrefix(err.Error(), `reply meta "s": `) {
		t.Fatalf("got %v", err)
	}
	if m.Status() != "" || (Meta{"status": json.RawMessage(`1`)}).Status() != "" {
		t.Fatal("a missing or non-string status must read as empty")
	}
}

func TestDocReader(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		max     int
		want    string
		wantErr error
	}{
		{name: "ends at ETX", in: "{\"a\":1}\x03{\"b\":2}\x03\x04", max: 100, want: `{"a":1}`},
		{name: "ends at EOT", in: "{}\x04rest", max: 100, want: `{}`},
		{name: "empty document", in: "\x03\x04", max: 100, want: ``},
		{name: "too large", in: strings.Repeat("x", 101) + "\x04", max: 100, wantErr: ErrTooLarge},
		{name: "truncated", in: `{"a":`, max: 100, wantErr: io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A tiny buffer and one-byte reads exercise the edges.
			d := &docReader{br: bufio.NewReaderSize(strings.NewReader(tt.in), 16), max: tt.max}
			var got bytes.Buffer
			_, err := io.Copy(&got, io.LimitReader(oneByte{d}, 1<<20))
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil || got.String() != tt.want {
				t.Fatalf("got %q, %v, want %q", got.String(), err, tt.want)
			}
		})
	}
}

// oneByte reads at most one byte at a time.
type oneByte struct{ r io.Reader }

func (o oneByte) Read(p []byte) (int, error) { return o.r.Read(p[:min(len(p), 1)]) }

func TestClientDoMeta(t *testing.T) {
	addr := startServer(t, func(conn net.Conn, _ <-chan struct{}) {
		br := bufio.NewReader(conn)
		readRequest(t, br)
		WriteMessage(conn, &Message{Meta: map[string]any{"status": StatusOK, "jobs": []any{"a", "b"}}})
	})
	c := &Client{Addr: addr}
	meta, err := c.DoMeta(context.Background(), NewRequest("list_jobs"), nil)
	if err != nil {
		t.Fatal(err)
	}
	var jobs []string
	if err := meta.Into("jobs", &jobs); err != nil || meta.Status() != StatusOK || !reflect.DeepEqual(jobs, []string{"a", "b"}) {
		t.Fatalf("got %v %v, %v", meta, jobs, err)
	}
}

// FuzzReadMeta checks the streaming decoder against DecodeMessage: a
// document DecodeMessage accepts gives the same meta, and no input panics.
func FuzzReadMeta(f *testing.F) {
	for _, tt := range messageDocs {
		f.Add([]byte(tt.doc))
	}
	f.Add([]byte(`{"meta":{"envoys":[{"name":"a"}],"status":"ok"},"data":[{"type":"table","rows":[["A"]]}]}`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		meta, err := ReadMeta(bytes.NewReader(doc), nil)
		m, merr := DecodeMessage(doc)
		if merr != nil {
			return
		}
		if err != nil {
			t.Fatalf("ReadMeta refused %q that DecodeMessage accepts: %v", doc, err)
		}
		got := map[string]any{}
		for k, raw := range meta {
			var v any
			if err := json.Unmarshal(raw, &v); err != nil {
				t.Fatalf("meta %q is not JSON: %v", k, err)
			}
			got[k] = v
		}
		want := m.Meta
		if want == nil {
			want = map[string]any{}
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("ReadMeta of %q = %v, DecodeMessage gives %v", doc, got, want)
		}
	})
}
