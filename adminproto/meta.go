package adminproto

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Meta is a reply's meta with every value kept as raw JSON, for clients that
// know the shapes they expect: Into decodes one value straight into a typed
// destination, so a reply is parsed once rather than into generic maps first
// and converted after. ReadMeta can also hand large values (list_envoys of
// 10,000 envoys is 3 MiB) to the client as a stream.
type Meta map[string]json.RawMessage

// MetaStreamer decodes the value of one meta key itself, from dec, which is
// positioned at the value. It either consumes exactly that value (with
// dec.Decode, or dec.Token for the brackets of an array it decodes element by
// element) and returns true, or reads nothing and returns false to leave the
// value to Meta.
type MetaStreamer func(key string, dec *json.Decoder) (bool, error)

// ReadMeta reads a reply document, the JSON envelope of Message, from r and
// returns its meta, a missing or null meta giving an empty Meta. Values whose
// key stream handles (stream may be nil) are decoded by it and left out of
// Meta; nothing else of the document is kept: members other than meta are
// read and dropped one at a time. As with DecodeMessage, the key "meta"
// matches in any case. Strings with invalid UTF-8 are decoded with
// U+FFFD in its place, as encoding/json does.
func ReadMeta(r io.Reader, stream MetaStreamer) (Meta, error) {
	meta, err := readMeta(json.NewDecoder(r), stream)
	if err == io.EOF {
		err = fmt.Errorf("document ends early: %w", io.ErrUnexpectedEOF)
	}
	if err != nil {
		return nil, fmt.Errorf("decode reply: %w", err)
	}
	return meta, nil
}

func readMeta(dec *json.Decoder, stream MetaStreamer) (Meta, error) {
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, notObject("document", err)
	}
	meta := Meta{}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return nil, err
		}
		if k, _ := key.(string); !strings.EqualFold(k, "meta") {
			if err := dec.Decode(&skipValue{}); err != nil {
				return nil, err
			}
			continue
		}
		t, err := dec.Token()
		switch {
		case err != nil:
			return nil, err
		case t == nil:
			continue // "meta": null
		case t != json.Delim('{'):
			return nil, notObject("meta", nil)
		}
		for dec.More() {
			t, err := dec.Token()
			if err != nil {
				return nil, err
			}
			k, _ := t.(string)
			if stream != nil {
				done, err := stream(k, dec)
				if err != nil {
					return nil, fmt.Errorf("meta %q: %w", k, err)
				}
				if done {
					continue
				}
			}
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				return nil, err
			}
			meta[k] = raw
		}
		if _, err := dec.Token(); err != nil {
			return nil, err
		}
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the document")
	}
	return meta, nil
}

// notObject says that what should have been a JSON object was not.
func notObject(what string, err error) error {
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("%s is not a JSON object: %w", what, err)
	}
	return fmt.Errorf("%s is not a JSON object", what)
}

// skipValue is a JSON value read and dropped.
type skipValue struct{}

func (*skipValue) UnmarshalJSON([]byte) error { return nil }

// MetaOf returns m's meta as a Meta, each value encoded to JSON.
func MetaOf(m *Message) (Meta, error) {
	out := make(Meta, len(m.Meta))
	for k, v := range m.Meta {
		b, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("meta %q: %w", k, err)
		}
		out[k] = b
	}
	return out, nil
}

// Status returns the reply status in "status", or "" if there is none or it
// is not a string.
func (m Meta) Status() string { return m.str("status") }

// Info returns the explanation in "info", or "" if there is none.
func (m Meta) Info() string { return m.str("info") }

func (m Meta) str(key string) string {
	var s string
	if raw, ok := m[key]; ok {
		_ = json.Unmarshal(raw, &s)
	}
	return s
}

// Into decodes the value of key into v. A missing key is an error naming it,
// as is a value of the wrong shape.
func (m Meta) Into(key string, v any) error {
	raw, ok := m[key]
	if !ok {
		return fmt.Errorf("reply meta has no %q", key)
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("reply meta %q: %w", key, err)
	}
	return nil
}
