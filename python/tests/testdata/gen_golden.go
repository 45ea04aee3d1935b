//go:build ignore

// gen_golden writes golden.safetensors with fedplane's own safetensors
// writer (tensor.NewSafetensorsWriter), so that the Python helper's tests
// check it against the bytes the envoy really reads and writes. Run from the
// repository root:
//
//	go run python/tests/testdata/gen_golden.go python/tests/testdata/golden.safetensors
//
// test_fedplane_train.py holds the same values; change both together.
package main

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"

	"github.com/fedplane/fedplane/tensor"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: go run gen_golden.go OUT")
		os.Exit(2)
	}
	le := binary.LittleEndian
	var (
		specs []tensor.Span
		raws  = map[string][]byte{}
	)
	add := func(name, dtype string, shape []int64, raw []byte) {
		specs = append(specs, tensor.Span{Name: name, DType: dtype, Shape: shape})
		raws[name] = raw
	}
	var b []byte
	for _, v := range []float32{1, -2.5, 3, 0.125, 1e-3, 1e30} {
		b = le.AppendUint32(b, math.Float32bits(v))
	}
	add("dense.weight", "F32", []int64{2, 3}, b)
	b = nil
	for _, v := range []float64{math.Pi, -1e-300} {
		b = le.AppendUint64(b, math.Float64bits(v))
	}
	add("f64", "F64", []int64{2}, b)
	// F16 1.0, -2.0, 0.5, 65504 (the largest F16).
	b = nil
	for _, v := range []uint16{0x3c00, 0xc000, 0x3800, 0x7bff} {
		b = le.AppendUint16(b, v)
	}
	add("f16", "F16", []int64{2, 2}, b)
	// BF16 1.0, -2.0, 3.140625 (the top half of float32 bits).
	b = nil
	for _, v := range []float32{1, -2, 3.140625} {
		b = le.AppendUint16(b, uint16(math.Float32bits(v)>>16))
	}
	add("bf16", "BF16", []int64{3}, b)
	b = nil
	for _, v := range []int64{-1, math.MaxInt64} {
		b = le.AppendUint64(b, uint64(v))
	}
	add("step", "I64", []int64{2}, b)
	add("count", "I32", []int64{}, le.AppendUint32(nil, 7)) // a scalar
	add("mask", "BOOL", []int64{3}, []byte{1, 0, 1})
	add("bytes", "U8", []int64{1, 3}, []byte{0, 128, 255})
	add("empty", "F32", []int64{0, 4}, nil)
	add("ünïcode", "I8", []int64{2}, []byte{0x80, 0x7f})

	// The data in name order, as the envoy writes a round's model (the
	// job model's tensors, which an Index keeps sorted by name).
	slices.SortFunc(specs, func(a, b tensor.Span) int { return strings.Compare(a.Name, b.Name) })
	var data bytes.Buffer
	for _, s := range specs {
		data.Write(raws[s.Name])
	}

	out, err := os.Create(os.Args[1])
	if err != nil {
		fail(err)
	}
	w, err := tensor.NewSafetensorsWriter(out, specs, map[string]string{"format": "pt", "source": "gen_golden.go"})
	if err != nil {
		fail(err)
	}
	if _, err := w.Write(data.Bytes()); err != nil {
		fail(err)
	}
	if err := w.Close(); err != nil {
		fail(err)
	}
	if err := out.Close(); err != nil {
		fail(err)
	}
	// Read it back with the reader the envoy uses on output models.
	x, f, err := tensor.OpenSafetensors(os.Args[1])
	if err != nil {
		fail(err)
	}
	defer f.Close()
	if err := tensor.CheckFinite(x); err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "gen_golden:", err)
	os.Exit(1)
}
