package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The values of -o, --output.
const (
	outputTable = "table"
	outputJSON  = "json"
	outputYAML  = "yaml"
)

// outputUsage is --output's help.
const outputUsage = "output format: table (tab-separated lines when stdout is not a terminal), json or yaml"

// structured reports whether -o asks for JSON or YAML rather than text.
func (f *factory) structured() bool { return f.output == outputJSON || f.output == outputYAML }

// print writes v as indented JSON, or as YAML converted from that JSON, so
// that both formats carry the same keys (the director's stable lowerCamel
// ones, and FLARE's job_id).
func (f *factory) print(v any) error {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return err
	}
	if f.output == outputYAML {
		y, err := jsonToYAML(buf.Bytes())
		if err != nil {
			return err
		}
		buf.Reset()
		buf.Write(y)
	}
	_, err := f.stdout.Write(buf.Bytes())
	return err
}

// printRecord writes v as one record of a stream: one line of JSON, or one
// YAML document ("---" first), so that a reader can take records as they
// come (metrics --follow).
func (f *factory) printRecord(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if f.output == outputYAML {
		y, err := jsonToYAML(b)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(f.stdout, "---\n%s", y)
		return err
	}
	_, err = fmt.Fprintf(f.stdout, "%s\n", b)
	return err
}

// printList prints the list under key in command's reply as indented JSON,
// objects unchanged (the director's stable lowerCamel keys), [] when empty,
// or as the same list in YAML. It streams: each element is converted and
// written as it arrives, so a list of 10,000 envoys is never held whole.
// Should the exchange break midway, what was printed is cut short and the
// error says why.
func (f *factory) printList(ctx context.Context, command, key string) error {
	return f.printElements(func(each func(dec *json.Decoder) error) error {
		return f.doList(ctx, command, key, each)
	})
}

// printElements prints, as printList does, the elements that list hands
// to each: one reply's list, or the pages of several.
func (f *factory) printElements(list func(each func(dec *json.Decoder) error) error) error {
	bw := bufio.NewWriterSize(f.stdout, 64<<10)
	var raw json.RawMessage
	var buf bytes.Buffer
	n := 0
	err := list(func(dec *json.Decoder) error {
		if err := dec.Decode(&raw); err != nil {
			return err
		}
		buf.Reset()
		if f.output == outputYAML {
			y, err := jsonToYAMLItem(raw)
			if err != nil {
				return err
			}
			buf.Write(y)
		} else {
			if n == 0 {
				buf.WriteString("[\n  ")
			} else {
				buf.WriteString(",\n  ")
			}
			if err := json.Indent(&buf, raw, "  ", "  "); err != nil {
				return err
			}
		}
		n++
		_, err := bw.Write(buf.Bytes())
		return err
	})
	if err != nil {
		bw.Flush()
		return err
	}
	switch {
	case n == 0:
		bw.WriteString("[]\n")
	case f.output == outputJSON:
		bw.WriteString("\n]\n")
	}
	return bw.Flush()
}

// jsonToYAML converts one JSON document to YAML with the same keys in the
// same order and the same types: a string stays a string even where it
// looks like a number or a time (the encoder quotes it).
func jsonToYAML(doc []byte) ([]byte, error) {
	n, err := yamlNode(doc)
	if err != nil {
		return nil, err
	}
	return encodeYAML(n)
}

// jsonToYAMLItem converts one JSON value to a YAML sequence of that one
// item ("- ..."): items written one after another make the list. Each item
// has an encoder of its own: yaml.v3's encoder keeps every event it has
// emitted, so one encoder for a list of 10,000 envoys costs more than ten
// thousand.
func jsonToYAMLItem(doc []byte) ([]byte, error) {
	n, err := yamlNode(doc)
	if err != nil {
		return nil, err
	}
	return encodeYAML(&yaml.Node{Kind: yaml.SequenceNode, Content: []*yaml.Node{n}})
}

func encodeYAML(n *yaml.Node) ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(n); err != nil {
		return nil, fmt.Errorf("convert to yaml: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("convert to yaml: %w", err)
	}
	return buf.Bytes(), nil
}

// yamlNode builds the YAML node of a JSON document. It reads JSON with
// encoding/json rather than parsing it as YAML, which costs ten times as
// much for a list of 10,000 envoys.
func yamlNode(doc []byte) (*yaml.Node, error) {
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	n, err := yamlValue(dec)
	if err != nil {
		return nil, fmt.Errorf("convert to yaml: %w", err)
	}
	return n, nil
}

func yamlValue(dec *json.Decoder) (*yaml.Node, error) {
	t, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch v := t.(type) {
	case json.Delim:
		kind := yaml.SequenceNode
		if v == '{' {
			kind = yaml.MappingNode
		}
		n := &yaml.Node{Kind: kind}
		for dec.More() {
			if kind == yaml.MappingNode {
				k, err := dec.Token()
				if err != nil {
					return nil, err
				}
				n.Content = append(n.Content, scalar("!!str", k.(string)))
			}
			c, err := yamlValue(dec)
			if err != nil {
				return nil, err
			}
			n.Content = append(n.Content, c)
		}
		if _, err := dec.Token(); err != nil { // the closing delimiter
			return nil, err
		}
		return n, nil
	case string:
		return scalar("!!str", v), nil
	case json.Number:
		if strings.ContainsAny(string(v), ".eE") {
			return scalar("!!float", string(v)), nil
		}
		return scalar("!!int", string(v)), nil
	case bool:
		return scalar("!!bool", strconv.FormatBool(v)), nil
	default: // nil
		return scalar("!!null", "null"), nil
	}
}

func scalar(tag, value string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: tag, Value: value}
}

// notice prints a message for a person that follows a table: on stdout
// when stdout is a terminal, as part of what is shown; on stderr when it is
// not, so that what a script reads from stdout is the table alone.
func (f *factory) notice(format string, args ...any) {
	w := f.stderr
	if f.stdoutIsTerminal() {
		w = f.stdout
	}
	fmt.Fprintf(w, format+"\n", args...)
}
