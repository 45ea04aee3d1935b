package adminproto

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

func TestNewRequest(t *testing.T) {
	req := NewRequest("list_jobs -m 5")
	got, err := req.Command()
	if err != nil || got != "list_jobs -m 5" {
		t.Errorf("got %q, %v, want %q", got, err, "list_jobs -m 5")
	}
	if req.Time == "" {
		t.Errorf("got no time, want one")
	}
	doc, err := EncodeMessage(req)
	if err != nil {
		t.Fatal(err)
	}
	back, err := DecodeMessage(doc)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, req) {
		t.Errorf("got %+v, want %+v", back, req)
	}
}

func TestMessageCommand(t *testing.T) {
	tests := []struct {
		name    string
		data    []Item
		want    string
		wantErr bool
	}{
		{name: "command", data: []Item{{Type: TypeCommand, Data: "check_status"}}, want: "check_status"},
		{
			name: "after a token",
			data: []Item{{Type: TypeToken, Data: "abc"}, {Type: TypeCommand, Data: "abort_job 1234"}},
			want: "abort_job 1234",
		},
		{
			name: "first string command",
			data: []Item{{Type: TypeCommand, Data: 42.0}, {Type: TypeCommand, Data: "a"}, {Type: TypeCommand, Data: "b"}},
			want: "a",
		},
		{name: "no command", data: []Item{{Type: TypeString, Data: "hello"}}, wantErr: true},
		{name: "no data", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := (&Message{Data: tt.data}).Command()
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("got %q, %v, want %q (error: %v)", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestMessageStatusInfo(t *testing.T) {
	tests := []struct {
		name       string
		meta       map[string]any
		status     string
		info       string
		wantStatus string
		wantInfo   string
	}{
		{name: "both", meta: map[string]any{"status": StatusInvalidJobID, "info": "no such job"}, wantStatus: "invalid_job_id", wantInfo: "no such job"},
		{name: "missing", meta: map[string]any{}},
		{name: "nil meta"},
		{name: "not strings", meta: map[string]any{"status": 1.0, "info": []any{"x"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := &Message{Meta: tt.meta}
			if got := m.Status(); got != tt.wantStatus {
				t.Errorf("status: got %q, want %q", got, tt.wantStatus)
			}
			if got := m.Info(); got != tt.wantInfo {
				t.Errorf("info: got %q, want %q", got, tt.wantInfo)
			}
		})
	}
}

func TestEncodeMessage(t *testing.T) {
	tests := []struct {
		name string
		m    *Message
		want string
	}{
		{name: "empty", m: &Message{}, want: `{"time":"","data":[],"meta":{}}`},
		{
			name: "table reply",
			m: &Message{
				Time: "2025-01-02 03:04:05.000006",
				Data: []Item{{Type: TypeTable, Rows: [][]string{{"JOB ID", "NAME"}, {"1234", "mnist"}}}},
				Meta: map[string]any{"status": StatusOK},
			},
			want: `{"time":"2025-01-02 03:04:05.000006","data":[{"type":"table","rows":[["JOB ID","NAME"],["1234","mnist"]]}],"meta":{"status":"ok"}}`,
		},
		{
			name: "empty string data is kept",
			m:    &Message{Data: []Item{{Type: TypeString, Data: ""}}},
			want: `{"time":"","data":[{"type":"string","data":""}],"meta":{}}`,
		},
		{
			name: "meta keys sorted and escaped, values of every kind",
			m: &Message{Meta: map[string]any{"z": []any{1, "a<b"}, "a": map[string]any{"y": true, "x": nil}, "m\"k": 1.5,
				"raw": RawJSON(`[{"k":"v"}]`)}},
			want: `{"time":"","data":[],"meta":{"a":{"x":null,"y":true},"m\"k":1.5,"raw":[{"k":"v"}],"z":[1,"a\u003cb"]}}`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := EncodeMessage(tt.m)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
			// Without RawJSON values, the document is what encoding/json
			// makes of the Message.
			if _, raw := tt.m.Meta["raw"]; !raw {
				out := *tt.m
				if out.Data == nil {
					out.Data = []Item{}
				}
				if out.Meta == nil {
					out.Meta = map[string]any{}
				}
				if std, _ := json.Marshal(&out); string(std) != string(got) {
					t.Errorf("got %s, encoding/json gives %s", got, std)
				}
			}
		})
	}
}

func TestEncodeMessageError(t *testing.T) {
	_, err := EncodeMessage(&Message{Meta: map[string]any{"bad": make(chan int)}})
	if err == nil || !strings.Contains(err.Error(), `meta "bad"`) {
		t.Fatalf("got %v, want an error naming meta \"bad\"", err)
	}
}

// messageDocs are documents for the table test of DecodeMessage and the seeds
// of FuzzDecodeMessage.
var messageDocs = []struct {
	name    string
	doc     string
	want    *Message
	wantErr string
}{
	{
		name: "FLARE request",
		doc:  `{"time": "2025-06-01 10:00:00.123456", "data": [{"type": "command", "data": "list_jobs"}, {"type": "token", "data": "t"}], "meta": {}}`,
		want: &Message{
			Time: "2025-06-01 10:00:00.123456",
			Data: []Item{{Type: TypeCommand, Data: "list_jobs"}, {Type: TypeToken, Data: "t"}},
			Meta: map[string]any{},
		},
	},
	{
		name: "dict reply",
		doc:  `{"time":"t","data":[{"type":"dict","data":{"job_id":"abc","n":3}}],"meta":{"status":"ok","info":"","job_id":"abc"}}`,
		want: &Message{
			Time: "t",
			Data: []Item{{Type: TypeDict, Data: map[string]any{"job_id": "abc", "n": 3.0}}},
			Meta: map[string]any{"status": "ok", "info": "", "job_id": "abc"},
		},
	},
	{name: "only meta", doc: ` {"meta":{"status":"error"}} `, want: &Message{Meta: map[string]any{"status": "error"}}},
	{name: "unknown fields ignored", doc: `{"extra":1}`, want: &Message{}},
	{name: "invalid UTF-8", doc: "{\"time\":\"\xff\"}", wantErr: "decode message: not valid UTF-8"},
	{name: "array", doc: `[]`, wantErr: "decode message: not a JSON object"},
	{name: "null", doc: `null`, wantErr: "decode message: not a JSON object"},
	{name: "empty", doc: ``, wantErr: "decode message: not a JSON object"},
	{name: "trailing data", doc: `{}{}`, wantErr: "decode message: invalid character '{' after top-level value"},
	{name: "wrong type", doc: `{"data":"x"}`, wantErr: "decode message: json: cannot unmarshal string into Go struct field Message.data of type []adminproto.Item"},
}

func TestDecodeMessage(t *testing.T) {
	for _, tt := range messageDocs {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeMessage([]byte(tt.doc))
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Errorf("got error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestReadWriteMessage(t *testing.T) {
	want := &Message{Time: "t", Data: []Item{{Type: TypeSuccess, Data: "done"}}, Meta: map[string]any{"status": "ok"}}
	var buf bytes.Buffer
	if err := WriteMessage(&buf, want); err != nil {
		t.Fatal(err)
	}
	got, err := ReadMessage(&buf, 0)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestReadMessage(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		wantTime string
		wantErr  string
	}{
		{name: "first document", in: `{"time":"1"}` + "\x03" + `{"time":"2"}` + "\x03\x04", wantTime: "1"},
		{name: "blank documents skipped", in: "\x03 \n\x03" + `{"time":"3"}` + "\x03\x04", wantTime: "3"},
		{name: "no document", in: "\x03\x04", wantErr: "text message has no document"},
		{name: "bad document", in: "[]\x03\x04", wantErr: "decode message: not a JSON object"},
		{name: "truncated", in: "{}\x03", wantErr: "truncated text message: unexpected EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadMessage(strings.NewReader(tt.in), 0)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Errorf("got error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			if got.Time != tt.wantTime {
				t.Errorf("got time %q, want %q", got.Time, tt.wantTime)
			}
		})
	}
}
