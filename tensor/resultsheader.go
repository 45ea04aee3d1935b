package tensor

import (
	"errors"
	"fmt"
	"io"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// This file holds the director's checks of an envoy's task results before
// it stores them: who sends them (the header, read from the stream's first
// bytes before any is written to disk) and how large they may be. That
// every value is finite is CheckFinite's (finite.go).

// exponentF32 is the exponent bits of a float32: all set for ±Inf and NaN.
const exponentF32 = 0x7f800000

// ErrHeaderTooLate is returned by ReadTaskResultsHeader when the prefix it
// is given ends before the header does.
var ErrHeaderTooLate = errors.New("the header and round fields must precede the tensors")

// ReadTaskResultsHeader decodes the small fields of a serialized
// TaskResults (the header, round_number, task_name, data_size) from its
// first bytes: those before the first tensor, where every protobuf encoder
// writes them (fields in number order). prefix is the whole message when
// whole is set; otherwise a prefix that ends before the first tensor is
// refused with ErrHeaderTooLate. Strings are bounded as ReadTaskResults
// bounds them.
func ReadTaskResultsHeader(prefix []byte, whole bool) (TaskResultsHeader, error) {
	h, err := readHeaderPrefix(prefix, whole)
	if err != nil {
		return TaskResultsHeader{}, fmt.Errorf("%s%w", errPrefix, err)
	}
	return h, nil
}

func readHeaderPrefix(b []byte, whole bool) (TaskResultsHeader, error) {
	var h TaskResultsHeader
	size := len(b)
	truncated := func(n int) error {
		if err := protowire.ParseError(n); !errors.Is(err, io.ErrUnexpectedEOF) || whole {
			return err
		}
		return fmt.Errorf("%w, within the first %d bytes", ErrHeaderTooLate, size)
	}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return h, truncated(n)
		}
		if num == fieldTensors {
			return h, nil
		}
		b = b[n:]
		var err error
		switch {
		case num == fieldHeader && typ == protowire.BytesType:
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return h, truncated(m)
			}
			err = messageHeader(v, &h)
			n = m
		case num == fieldRound && typ == protowire.VarintType:
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return h, truncated(m)
			}
			h.Round, n = int32(v), m
		case num == fieldTaskName && typ == protowire.BytesType:
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return h, truncated(m)
			}
			h.TaskName, err = headerString("task_name", v)
			n = m
		case num == fieldDataSize && typ == protowire.VarintType:
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return h, truncated(m)
			}
			h.DataSize, n = int32(v), m
		default:
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return h, truncated(n)
			}
		}
		if err != nil {
			return h, err
		}
		b = b[n:]
	}
	if !whole {
		return h, fmt.Errorf("%w, within the first %d bytes", ErrHeaderTooLate, size)
	}
	return h, nil
}

// messageHeader merges the MessageHeader in b into h, as proto.Unmarshal
// merges a repeated message field.
func messageHeader(b []byte, h *TaskResultsHeader) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("header: %w", protowire.ParseError(n))
		}
		b = b[n:]
		if typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return fmt.Errorf("header: %w", protowire.ParseError(n))
			}
			b = b[n:]
			continue
		}
		v, m := protowire.ConsumeBytes(b)
		if m < 0 {
			return fmt.Errorf("header: %w", protowire.ParseError(m))
		}
		b = b[m:]
		var err error
		switch num {
		case fieldSender:
			h.Sender, err = headerString("header sender", v)
		case fieldReceiver:
			h.Receiver, err = headerString("header receiver", v)
		case fieldFederation:
			h.FederationUUID, err = headerString("header federation_uuid", v)
		case fieldCommonName:
			h.CommonName, err = headerString("header single_col_cert_common_name", v)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

func headerString(what string, b []byte) (string, error) {
	if len(b) > MaxNameLen {
		return "", fmt.Errorf("%s: %d bytes exceed the limit of %d", what, len(b), MaxNameLen)
	}
	if !utf8.Valid(b) {
		return "", fmt.Errorf("%s is not valid UTF-8", what)
	}
	return string(b), nil
}

// Slack of MaxTaskResultsSize: what an encoding may add to each tensor's
// name, shape and data (tags, flags, field keys) and to the whole (the
// header's strings, metrics).
const (
	tensorSlack  = 256
	resultsSlack = 1 << 20
)

// MaxTaskResultsSize is the most bytes that task results for model take:
// the tensors' data, names and shapes, with room for tags and flags per
// tensor, and a MiB for the header and metrics (thousands of them). A
// director refuses a stream past it before writing the excess.
func MaxTaskResultsSize(model *Index) int64 {
	n := int64(resultsSlack)
	for _, s := range model.Tensors {
		n += s.Size + int64(len(s.Name)) + int64(protowire.SizeVarint(uint64(s.Size)))*2 + 11*int64(len(s.Shape)) + tensorSlack
	}
	return n
}
