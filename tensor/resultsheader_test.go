package tensor

import (
	"bytes"
	"errors"
	"io"
	"math"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
)

func TestReadTaskResultsHeader(t *testing.T) {
	model := mustFloat32Index(t, map[string][]float32{"w": {1, 2}, "b": {3}}, nil)
	full := mustMarshal(t, protoTaskResults(t, testHeader, model, testMetrics))
	noTensors := mustMarshal(t, protoTaskResults(t, testHeader, &Index{}, nil))
	// The header after the tensors: valid protobuf, but not where the
	// director reads it.
	late := append(bytes.Clone(full[len(noTensors):]), noTensors...)
	tests := []struct {
		name   string
		prefix []byte
		whole  bool
		want   TaskResultsHeader
		err    string
	}{
		{"whole message", full, true, testHeader, ""},
		{"prefix up to the first tensor", full[:len(noTensors)+1], false, testHeader, ""},
		{"no tensors at all", noTensors, true, testHeader, ""},
		{"prefix ends in the header", full[:10], false, TaskResultsHeader{}, "must precede the tensors, within the first 10 bytes"},
		{"prefix ends before a tensor", noTensors, false, TaskResultsHeader{}, "must precede the tensors"},
		{"truncated whole message", full[:10], true, TaskResultsHeader{}, "unexpected EOF"},
		{"header after the tensors", late, true, TaskResultsHeader{}, ""},
		{"sender too long", mustMarshal(t, protoTaskResults(t, TaskResultsHeader{Sender: strings.Repeat("x", MaxNameLen+1)}, model, nil)), true,
			TaskResultsHeader{}, "header sender: 1025 bytes exceed the limit of 1024"},
		{"bad utf-8", protowire.AppendBytes(protowire.AppendTag(nil, fieldTaskName, protowire.BytesType), []byte{0xff}), true,
			TaskResultsHeader{}, "task_name is not valid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h, err := ReadTaskResultsHeader(tt.prefix, tt.whole)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("got %v, want an error with %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if h != tt.want {
				t.Fatalf("got %+v, want %+v", h, tt.want)
			}
		})
	}
	if _, err := ReadTaskResultsHeader(full[:10], false); !errors.Is(err, ErrHeaderTooLate) {
		t.Fatalf("got %v, want ErrHeaderTooLate", err)
	}
}

// FuzzReadTaskResultsHeader: no panic on garbage or on any prefix, and
// the header of every message ReadTaskResults accepts, encoded again (the
// header first, as every encoder writes it), is read back from the prefix
// before its first tensor.
func FuzzReadTaskResultsHeader(f *testing.F) {
	small := mustFloat32Index(f, map[string][]float32{"w": {1, 2}}, nil)
	f.Add(mustMarshal(f, protoTaskResults(f, testHeader, small, testMetrics)))
	f.Add(mustMarshal(f, protoTaskResults(f, TaskResultsHeader{}, small, nil)))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, n := range []int{0, 1, len(b) / 2, len(b)} {
			ReadTaskResultsHeader(b[:n], n == len(b))
		}
		tr, err := ReadTaskResults(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			return
		}
		var buf bytes.Buffer
		if _, err := WriteTaskResults(&buf, tr.Header, tr.Model, tr.Metrics); err != nil {
			t.Fatalf("re-encoding refused: %v", err)
		}
		h, err := ReadTaskResultsHeader(buf.Bytes(), true)
		if err != nil {
			t.Fatalf("header of accepted results: %v", err)
		}
		if h != tr.Header {
			t.Fatalf("got %+v, want %+v", h, tr.Header)
		}
	})
}

func TestFedAvgRefusesNonFinite(t *testing.T) {
	big := mustFloat32Index(t, map[string][]float32{"w": {1, math.MaxFloat32}}, nil)
	nan := mustFloat32Index(t, map[string][]float32{"w": {float32(math.NaN()), 1}}, nil)
	tests := []struct {
		name   string
		inputs []Input
		want   string
	}{
		{"extremes average to a finite value", []Input{{big, 1}, {mustFloat32Index(t, map[string][]float32{"w": {1, -math.MaxFloat32}}, nil), 0.5}}, ""},
		{"NaN input", []Input{{nan, 1}, {big, 1}}, `fedavg: tensor "w": element 0 averages to NaN`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := FedAvg(io.Discard, big, tt.inputs)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if got := errString(err); got != tt.want+"; a global model holds finite values only" {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestMaxTaskResultsSize(t *testing.T) {
	model := mustFloat32Index(t, map[string][]float32{"w": make([]float32, 1000), "a.long.layer.name.weight": {1, 2, 3}}, map[string][]int64{"w": {10, 10, 10}})
	var buf bytes.Buffer
	metrics := make([]Metric, 1000)
	for i := range metrics {
		metrics[i] = Metric{Name: strings.Repeat("m", 100) + string(rune('a'+i%26)) + strings.Repeat("x", i/26), Value: 1}
	}
	h := TaskResultsHeader{Sender: strings.Repeat("s", MaxNameLen), Receiver: strings.Repeat("r", MaxNameLen),
		FederationUUID: strings.Repeat("f", MaxNameLen), CommonName: strings.Repeat("c", MaxNameLen), Round: math.MaxInt32, TaskName: strings.Repeat("t", MaxNameLen), DataSize: math.MaxInt32}
	n, err := WriteTaskResults(&buf, h, model, metrics)
	if err != nil {
		t.Fatal(err)
	}
	if max := MaxTaskResultsSize(model); n > max || max > n+2*resultsSlack {
		t.Fatalf("results of %d bytes, bound %d: want the bound above and near", n, max)
	}
}

// BenchmarkCheckFinite measures the director's pass over received results
// (a 64 MiB model held in memory, as the page cache holds a fresh file).
