package adminproto

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"
	"unicode/utf8"
)

// Message is the JSON envelope of a FLARE text document, used for requests
// and replies alike:
//
//	{"time": "...", "data": [{"type": "command", "data": "list_jobs -m 5"}], "meta": {}}
//
// A request carries a command item; a reply carries what to show in Data and
// the outcome in Meta ("status", "info" and command-specific keys).
type Message struct {
	Time string         `json:"time"`
	Data []Item         `json:"data"`
	Meta map[string]any `json:"meta"`
}

// Item is one element of a Message's Data. Data holds a string for most
// types and an object for TypeDict; Rows holds a table, header row first.
// Decoded JSON numbers are float64.
type Item struct {
	Type string     `json:"type"`
	Data any        `json:"data,omitempty"`
	Rows [][]string `json:"rows,omitempty"`
}

// Item types.
const (
	TypeString   = "string"
	TypeSuccess  = "success"
	TypeError    = "error"
	TypeTable    = "table"
	TypeDict     = "dict"
	TypeCommand  = "command"
	TypeToken    = "token"
	TypeShutdown = "shutdown"
)

// Reply statuses, the value of a reply's meta "status".
const (
	StatusOK               = "ok"
	StatusSyntaxError      = "syntax_error"
	StatusNotAuthorized    = "not_authorized"
	StatusNotAuthenticated = "not_authenticated"
	StatusError            = "error"
	StatusInternalError    = "internal_error"
	StatusInvalidJobID     = "invalid_job_id"
	StatusJobRunning       = "job_running"
	StatusJobNotRunning    = "job_not_running"
	StatusNoJobs           = "no_jobs"
	StatusInvalidJobDef    = "invalid_job_def"
)

// timeLayout is how Python prints a datetime, which is what FLARE puts in
// "time".
const timeLayout = "2006-01-02 15:04:05.000000"

// NewRequest returns a request envelope for command, a command line such as
// "list_jobs -m 5", stamped with the current time.
func NewRequest(command string) *Message {
	return &Message{
		Time: time.Now().Format(timeLayout),
		Data: []Item{{Type: TypeCommand, Data: command}},
		Meta: map[string]any{},
	}
}

// Command returns the command line of a request: the data of its first
// command item that holds a string.
func (m *Message) Command() (string, error) {
	for _, it := range m.Data {
		if it.Type != TypeCommand {
			continue
		}
		if s, ok := it.Data.(string); ok {
			return s, nil
		}
	}
	return "", errors.New("request has no command")
}

// Status returns the reply status in meta "status", or "" if there is none.
func (m *Message) Status() string { return m.metaString("status") }

// Info returns the explanation in meta "info", or "" if there is none.
func (m *Message) Info() string { return m.metaString("info") }

func (m *Message) metaString(key string) string {
	s, _ := m.Meta[key].(string)
	return s
}

// RawJSON is a Meta value that is already encoded JSON. EncodeMessage writes
// it as it is, neither re-encoding nor validating it, so a producer of a
// large value (the director's envoy list) encodes it once, its own way; the
// producer must guarantee it is valid JSON, and its tests check that it is.
type RawJSON []byte

// EncodeMessage returns the JSON document of m: time, data, then meta with
// its keys sorted, as encoding/json writes a Message. A nil Data or Meta is
// sent as [] or {} rather than null, which FLARE's Python side would trip
// over. RawJSON values of Meta are copied in as they are.
func EncodeMessage(m *Message) ([]byte, error) {
	data := m.Data
	if data == nil {
		data = []Item{}
	}
	head, err := json.Marshal(struct {
		Time string `json:"time"`
		Data []Item `json:"data"`
	}{m.Time, data})
	if err != nil {
		return nil, fmt.Errorf("encode message: %w", err)
	}
	keys := slices.Sorted(maps.Keys(m.Meta))
	size := len(head) + len(`,"meta":{}`)
	for _, k := range keys {
		if raw, ok := m.Meta[k].(RawJSON); ok {
			size += len(k) + len(raw) + 4
		}
	}
	doc := make([]byte, 0, size+512)
	doc = append(doc, head[:len(head)-1]...)
	doc = append(doc, `,"meta":{`...)
	for i, k := range keys {
		if i > 0 {
			doc = append(doc, ',')
		}
		kb, err := json.Marshal(k)
		if err != nil {
			return nil, fmt.Errorf("encode message: meta key %q: %w", k, err)
		}
		doc = append(doc, kb...)
		doc = append(doc, ':')
		switch v := m.Meta[k].(type) {
		case RawJSON:
			doc = append(doc, v...)
		default:
			vb, err := json.Marshal(v)
			if err != nil {
				return nil, fmt.Errorf("encode message: meta %q: %w", k, err)
			}
			doc = append(doc, vb...)
		}
	}
	doc = append(doc, "}}"...)
	return doc, nil
}

// DecodeMessage decodes one JSON document into a Message. The document must
// be valid UTF-8 and a JSON object.
func DecodeMessage(doc []byte) (*Message, error) {
	if err := checkDoc(doc); err != nil {
		return nil, fmt.Errorf("decode message: %w", err)
	}
	var m Message
	if err := json.Unmarshal(doc, &m); err != nil {
		return nil, fmt.Errorf("decode message: %w", err)
	}
	return &m, nil
}

// checkDoc refuses a document that is not valid UTF-8 or not a JSON object,
// before it is decoded.
func checkDoc(doc []byte) error {
	if !utf8.Valid(doc) {
		return errors.New("not valid UTF-8")
	}
	if t := bytes.TrimLeft(doc, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return errors.New("not a JSON object")
	}
	return nil
}

// ReadMessage reads a text message of at most max bytes (see ReadText) and
// decodes its first non-blank document; further documents are ignored.
func ReadMessage(r io.Reader, max int) (*Message, error) {
	msg, err := ReadText(r, max)
	if err != nil {
		return nil, err
	}
	for _, doc := range SplitText(msg) {
		if len(bytes.TrimSpace(doc)) > 0 {
			return DecodeMessage(doc)
		}
	}
	return nil, errors.New("text message has no document")
}

// WriteMessage writes m as a text message of one document. It does not flush.
func WriteMessage(w io.Writer, m *Message) error {
	doc, err := EncodeMessage(m)
	if err != nil {
		return err
	}
	return WriteText(w, doc)
}
