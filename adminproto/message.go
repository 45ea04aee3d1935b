package adminproto

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
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

// EncodeMessage returns the JSON document of m. A nil Data or Meta is sent as
// [] or {} rather than null, which FLARE's Python side would trip over.
func EncodeMessage(m *Message) ([]byte, error) {
	out := *m
	if out.Data == nil {
		out.Data = []Item{}
	}
	if out.Meta == nil {
		out.Meta = map[string]any{}
	}
	doc, err := json.Marshal(&out)
	if err != nil {
		return nil, fmt.Errorf("encode message: %w", err)
	}
	return doc, nil
}

// DecodeMessage decodes one JSON document into a Message. The document must
// be valid UTF-8 and a JSON object.
func DecodeMessage(doc []byte) (*Message, error) {
	if !utf8.Valid(doc) {
		return nil, errors.New("decode message: not valid UTF-8")
	}
	if t := bytes.TrimLeft(doc, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return nil, errors.New("decode message: not a JSON object")
	}
	var m Message
	if err := json.Unmarshal(doc, &m); err != nil {
		return nil, fmt.Errorf("decode message: %w", err)
	}
	return &m, nil
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
