package tensor

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"io"
	"math"
	"os"
	"testing"
)

// mustWriteModelFile writes a safetensors file of params float32s, all equal
// to v, split over a few tensors, without holding it in memory.
func mustWriteModelFile(tb testing.TB, path string, params int64, v float32) {
	tb.Helper()
	specs := splitParams(params)
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	bw := bufio.NewWriterSize(f, 1<<20)
	sw, err := NewSafetensorsWriter(bw, specs, map[string]string{"format": "pt"})
	if err != nil {
		tb.Fatal(err)
	}
	chunk := make([]byte, 1<<20)
	for i := 0; i < len(chunk); i += 4 {
		binary.LittleEndian.PutUint32(chunk[i:], math.Float32bits(v))
	}
	for left := params * 4; left > 0; {
		n := min(left, int64(len(chunk)))
		if _, err := sw.Write(chunk[:n]); err != nil {
			tb.Fatal(err)
		}
		left -= n
	}
	if err := sw.Close(); err != nil {
		tb.Fatal(err)
	}
	if err := bw.Flush(); err != nil {
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
}

// splitParams lays params out as a few tensors of uneven sizes, so that
// chunks straddle tensor ends.
func splitParams(params int64) []Span {
	var specs []Span
	names := []string{"a.weight", "b.bias", "c.weight", "d.weight"}
	parts := []int64{params / 2, 3, params / 3}
	used := int64(0)
	for i, n := range parts {
		n = min(n, params-used)
		specs = append(specs, Span{Name: names[i], DType: F32, Shape: []int64{n}})
		used += n
	}
	specs = append(specs, Span{Name: names[3], DType: F32, Shape: []int64{params - used}})
	return specs
}

// f32le encodes vals as little-endian float32s.
func f32le(vals ...float32) []byte {
	b := make([]byte, 0, 4*len(vals))
	for _, v := range vals {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

// fill returns n float32s given by f(i).
func fill(n int, f func(i int) float32) []float32 {
	out := make([]float32, n)
	for i := range out {
		out[i] = f(i)
	}
	return out
}

// mustSafetensors writes specs with data (one []byte per spec, in order)
// and metadata to an in-memory safetensors file.
func mustSafetensors(tb testing.TB, specs []Span, data [][]byte, meta map[string]string) []byte {
	tb.Helper()
	var buf bytes.Buffer
	sw, err := NewSafetensorsWriter(&buf, specs, meta)
	if err != nil {
		tb.Fatal(err)
	}
	for _, d := range data {
		if _, err := sw.Write(d); err != nil {
			tb.Fatal(err)
		}
	}
	if err := sw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// mustFloat32Index returns an in-memory safetensors Index of F32 tensors.
func mustFloat32Index(tb testing.TB, tensors map[string][]float32, shapes map[string][]int64) *Index {
	tb.Helper()
	var buf bytes.Buffer
	if err := WriteFloat32Safetensors(&buf, tensors, shapes); err != nil {
		tb.Fatal(err)
	}
	x, _, err := ReadSafetensors(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		tb.Fatal(err)
	}
	return x
}

// rawSafetensors builds a file from a header length, header text and
// dataLen zero bytes of data, for headers the writer would never produce.
func rawSafetensors(n uint64, header string, dataLen int) []byte {
	b := binary.LittleEndian.AppendUint64(nil, n)
	b = append(b, header...)
	return append(b, make([]byte, dataLen)...)
}

// withHeader is rawSafetensors with the header's real length.
func withHeader(header string, dataLen int) []byte {
	return rawSafetensors(uint64(len(header)), header, dataLen)
}

// sectionBytes reads one tensor's bytes.
func sectionBytes(tb testing.TB, x *Index, s Span) []byte {
	tb.Helper()
	b, err := io.ReadAll(x.Section(s))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// withoutOffsets returns spans with Offset zeroed, to compare layouts.
func withoutOffsets(spans []Span) []Span {
	out := make([]Span, len(spans))
	for i, s := range spans {
		s.Offset = 0
		out[i] = s
	}
	return out
}
