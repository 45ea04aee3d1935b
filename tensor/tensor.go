// Package tensor moves model weights between the forms fedplane meets them
// in: safetensors files (what training commands read and write), OpenFL
// NamedTensors (what travels on the gRPC wire), serialized TaskResults (what
// an envoy reports after a round), and the FedAvg of several of them (what
// the director keeps as the next round's model).
//
// Models can be many gigabytes and a director aggregates one per envoy, so
// nothing here holds a whole model in memory. An Index says where each
// tensor's bytes live inside a file (an io.ReaderAt); readers and writers
// stream those bytes in bounded chunks, and the only functions that return
// tensor data return one tensor at a time. Everything parsed from a file or
// the network is treated as hostile: sizes are checked against the file and
// against fixed limits before anything is allocated.
//
// Arithmetic is float32 ("F32") only, because that is the only element type
// OpenFL's wire carries; the safetensors reader still understands every
// standard dtype so that it can validate any file it is given.
package tensor

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"unsafe"
)

// F32 is the dtype of little-endian IEEE 754 binary32 elements, the only one
// that FedAvg and the OpenFL wire support.
const F32 = "F32"

// dtypeSizes maps every safetensors dtype the reader accepts to its element
// size in bytes.
var dtypeSizes = map[string]int64{
	"F64":  8,
	"F32":  4,
	"F16":  2,
	"BF16": 2,
	"I64":  8,
	"I32":  4,
	"I16":  2,
	"I8":   1,
	"U8":   1,
	"BOOL": 1,
}

// Span is one tensor's bytes inside a file (little-endian, C order).
type Span struct {
	Name   string
	DType  string  // "F32", ...
	Shape  []int64 // empty for a scalar
	Offset int64   // absolute offset in the file
	Size   int64   // bytes
	// Delta marks a tensor of task results that holds the difference from
	// the round's global tensor, not the values (an OpenFL collaborator
	// with delta_updates sends these). FedAvg adds the base back.
	Delta bool
}

// Elements returns the number of elements of s's shape, or -1 if a
// dimension is negative or the product overflows an int64.
func (s Span) Elements() int64 {
	return elements(s.Shape)
}

// elements is the checked product of shape: -1 on a negative dimension or on
// overflow, so that no caller can be tricked into a tiny allocation for a
// huge tensor by wrap-around.
func elements(shape []int64) int64 {
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return -1
		}
		if d != 0 && n > math.MaxInt64/d {
			return -1
		}
		n *= d
	}
	return n
}

// byteSize returns the number of bytes of a tensor of dtype and shape, or an
// error saying why there is no such tensor.
func byteSize(dtype string, shape []int64) (int64, error) {
	es, ok := dtypeSizes[dtype]
	if !ok {
		return 0, fmt.Errorf("unknown dtype %q", dtype)
	}
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("negative dimension in shape %v", shape)
		}
	}
	n := elements(shape)
	if n < 0 || n > math.MaxInt64/es {
		return 0, fmt.Errorf("shape %v is too large", shape)
	}
	return n * es, nil
}

// Index is a set of tensors readable from R, in a deterministic order (by
// name). Build one with NewIndex, ReadSafetensors or ReadTaskResults.
type Index struct {
	R       io.ReaderAt
	Tensors []Span

	byName map[string]int // position in Tensors; nil for a hand-built Index
}

// NewIndex returns an Index of spans inside r, sorted by name. It refuses
// empty or duplicate names, unknown dtypes and sizes that do not match the
// shape, so that every Index handed around is self-consistent.
func NewIndex(r io.ReaderAt, spans []Span) (*Index, error) {
	ts := slices.Clone(spans)
	slices.SortFunc(ts, func(a, b Span) int { return strings.Compare(a.Name, b.Name) })
	x := &Index{R: r, Tensors: ts, byName: make(map[string]int, len(ts))}
	for i, s := range ts {
		if s.Name == "" {
			return nil, errors.New("tensor with an empty name")
		}
		if _, dup := x.byName[s.Name]; dup {
			return nil, fmt.Errorf("duplicate tensor %q", s.Name)
		}
		x.byName[s.Name] = i
		size, err := byteSize(s.DType, s.Shape)
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", s.Name, err)
		}
		if size != s.Size {
			return nil, fmt.Errorf("tensor %q: %d bytes, shape %v of %s needs %d", s.Name, s.Size, s.Shape, s.DType, size)
		}
		if s.Offset < 0 {
			return nil, fmt.Errorf("tensor %q: negative offset %d", s.Name, s.Offset)
		}
	}
	return x, nil
}

// Lookup returns the span of the tensor called name.
func (x *Index) Lookup(name string) (Span, bool) {
	if x.byName == nil {
		// A literal Index has no map; a scan keeps it usable without a
		// lazily built map that concurrent readers would race on.
		for _, s := range x.Tensors {
			if s.Name == name {
				return s, true
			}
		}
		return Span{}, false
	}
	i, ok := x.byName[name]
	if !ok {
		return Span{}, false
	}
	return x.Tensors[i], true
}

// Float32s reads the F32 tensor called name. It holds exactly that one
// tensor in memory; use Section to stream a tensor instead.
func (x *Index) Float32s(name string) ([]float32, error) {
	s, ok := x.Lookup(name)
	if !ok {
		return nil, fmt.Errorf("tensor %q is missing", name)
	}
	if s.DType != F32 {
		return nil, fmt.Errorf("tensor %q: dtype %s, want %s", name, s.DType, F32)
	}
	if s.Size%4 != 0 || s.Size/4 != s.Elements() {
		return nil, fmt.Errorf("tensor %q: %d bytes do not hold shape %v", name, s.Size, s.Shape)
	}
	out := make([]float32, s.Size/4)
	if err := readFloat32s(x.R, s.Offset, out); err != nil {
		return nil, fmt.Errorf("tensor %q: %w", name, err)
	}
	return out, nil
}

// Section returns a reader of s's bytes.
func (x *Index) Section(s Span) *io.SectionReader {
	return io.NewSectionReader(x.R, s.Offset, s.Size)
}

// Params returns the total number of elements of all tensors.
func (x *Index) Params() int64 {
	var n int64
	for _, s := range x.Tensors {
		n += s.Elements()
	}
	return n
}

// SameLayout reports whether a has exactly the tensors of b (names, dtypes
// and shapes; offsets do not matter). b is the reference, "the model", and
// the error names the first difference found walking b's tensors in order,
// then a's extra ones.
func SameLayout(a, b *Index) error {
	for _, want := range b.Tensors {
		got, ok := a.Lookup(want.Name)
		if !ok {
			return fmt.Errorf("tensor %q is missing", want.Name)
		}
		if got.DType != want.DType {
			return fmt.Errorf("tensor %q: dtype %s, the model's is %s", want.Name, got.DType, want.DType)
		}
		if !slices.Equal(got.Shape, want.Shape) {
			return fmt.Errorf("tensor %q: shape %v differs from the model's %v", want.Name, got.Shape, want.Shape)
		}
	}
	for _, s := range a.Tensors {
		if _, ok := b.Lookup(s.Name); !ok {
			return fmt.Errorf("unexpected tensor %q", s.Name)
		}
	}
	if len(a.Tensors) != len(b.Tensors) {
		// Only a hand-built Index with duplicate names gets here.
		return fmt.Errorf("%d tensors, the model has %d", len(a.Tensors), len(b.Tensors))
	}
	return nil
}

// littleEndian is true on hosts whose native byte order matches the
// little-endian files, where float32 data can be used in place.
var littleEndian = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()

// float32Bytes views f's memory as bytes. Reading file data into a []float32
// through this view keeps the buffer 4-byte aligned, which reinterpreting an
// arbitrary []byte would not guarantee.
func float32Bytes(f []float32) []byte {
	if len(f) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&f[0])), 4*len(f))
}

// readFloat32s fills dst with the little-endian float32s at off in r.
func readFloat32s(r io.ReaderAt, off int64, dst []float32) error {
	b := float32Bytes(dst)
	if n, err := r.ReadAt(b, off); n < len(b) {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	fromLittleEndian(dst, littleEndian)
	return nil
}

// fromLittleEndian turns dst, which holds little-endian float32 bytes read
// through float32Bytes, into native floats. On little-endian hosts (native
// true) there is nothing to do; the portable path exists for big-endian ones
// and is exercised by the tests on every host.
func fromLittleEndian(dst []float32, native bool) {
	if native {
		return
	}
	b := float32Bytes(dst)
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
}

// toLittleEndian is the inverse of fromLittleEndian: it rewrites src in place
// as little-endian bytes and returns them.
func toLittleEndian(src []float32, native bool) []byte {
	b := float32Bytes(src)
	if native {
		return b
	}
	for i, v := range src {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	return b
}
