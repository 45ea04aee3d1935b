package tensor

import (
	"bytes"
	"encoding/binary"
	"math"
	"slices"
	"testing"
)

func TestSameLayout(t *testing.T) {
	model := mustFloat32Index(t,
		map[string][]float32{"fc.weight": make([]float32, 50), "fc.bias": make([]float32, 10), "b": {0}},
		map[string][]int64{"fc.weight": {10, 5}, "b": {}})
	tests := []struct {
		name string
		x    *Index
		want string
	}{
		{"same", mustFloat32Index(t,
			map[string][]float32{"fc.weight": make([]float32, 50), "fc.bias": make([]float32, 10), "b": {1}},
			map[string][]int64{"fc.weight": {10, 5}, "b": {}}), ""},
		{"shape", mustFloat32Index(t,
			map[string][]float32{"fc.weight": make([]float32, 40), "fc.bias": make([]float32, 10), "b": {1}},
			map[string][]int64{"fc.weight": {10, 4}, "b": {}}),
			`tensor "fc.weight": shape [10 4] differs from the model's [10 5]`},
		{"same elements, other shape", mustFloat32Index(t,
			map[string][]float32{"fc.weight": make([]float32, 50), "fc.bias": make([]float32, 10), "b": {1}},
			map[string][]int64{"fc.weight": {5, 10}, "b": {}}),
			`tensor "fc.weight": shape [5 10] differs from the model's [10 5]`},
		{"scalar against [1]", mustFloat32Index(t,
			map[string][]float32{"fc.weight": make([]float32, 50), "fc.bias": make([]float32, 10), "b": {1}},
			map[string][]int64{"fc.weight": {10, 5}}),
			`tensor "b": shape [1] differs from the model's []`},
		{"missing", mustFloat32Index(t,
			map[string][]float32{"fc.weight": make([]float32, 50), "b": {1}},
			map[string][]int64{"fc.weight": {10, 5}, "b": {}}),
			`tensor "fc.bias" is missing`},
		{"unexpected", mustFloat32Index(t,
			map[string][]float32{"fc.weight": make([]float32, 50), "fc.bias": make([]float32, 10), "b": {1}, "y": {1}},
			map[string][]int64{"fc.weight": {10, 5}, "b": {}}),
			`unexpected tensor "y"`},
		{"dtype", &Index{Tensors: []Span{
			{Name: "b", DType: "F64", Shape: []int64{}, Size: 8},
			{Name: "fc.bias", DType: F32, Shape: []int64{10}, Size: 40},
			{Name: "fc.weight", DType: F32, Shape: []int64{10, 5}, Size: 200},
		}}, `tensor "b": dtype F64, the model's is F32`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := errString(SameLayout(tt.x, model)); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestNewIndex(t *testing.T) {
	tests := []struct {
		name  string
		spans []Span
		want  string
	}{
		{"ok, sorted", []Span{{Name: "z", DType: F32, Shape: []int64{2}, Size: 8}, {Name: "a", DType: "U8", Size: 1}}, ""},
		{"empty name", []Span{{DType: F32, Size: 4}}, "tensor with an empty name"},
		{"duplicate", []Span{{Name: "a", DType: F32, Size: 4}, {Name: "a", DType: F32, Size: 4}}, `duplicate tensor "a"`},
		{"size", []Span{{Name: "a", DType: F32, Shape: []int64{2}, Size: 4}}, `tensor "a": 4 bytes, shape [2] of F32 needs 8`},
		{"dtype", []Span{{Name: "a", DType: "X", Size: 4}}, `tensor "a": unknown dtype "X"`},
		{"offset", []Span{{Name: "a", DType: F32, Size: 4, Offset: -1}}, `tensor "a": negative offset -1`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			x, err := NewIndex(nil, tt.spans)
			if got := errString(err); got != tt.want {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			if err != nil {
				return
			}
			for i := 1; i < len(x.Tensors); i++ {
				if x.Tensors[i-1].Name >= x.Tensors[i].Name {
					t.Errorf("got order %v, want sorted by name", x.Tensors)
				}
			}
		})
	}
}

func TestIndexLookup(t *testing.T) {
	spans := []Span{{Name: "b", DType: F32, Size: 4, Offset: 4}, {Name: "a", DType: F32, Size: 4}}
	built, err := NewIndex(nil, spans)
	if err != nil {
		t.Fatal(err)
	}
	literal := &Index{Tensors: spans} // no map: Lookup must still work
	for _, x := range []*Index{built, literal} {
		if s, ok := x.Lookup("b"); !ok || s.Offset != 4 {
			t.Errorf("Lookup(b): got %v, %v, want offset 4", s, ok)
		}
		if _, ok := x.Lookup("c"); ok {
			t.Errorf("Lookup(c): got found, want missing")
		}
		if got, want := x.Params(), int64(2); got != want {
			t.Errorf("Params: got %v, want %v", got, want)
		}
	}
}

func TestFloat32s(t *testing.T) {
	file := mustSafetensors(t, []Span{
		{Name: "i", DType: "I32", Shape: []int64{1}},
		{Name: "w", DType: F32, Shape: []int64{3}},
	}, [][]byte{{1, 2, 3, 4}, f32le(1, float32(math.Inf(-1)), -0.5)}, nil)
	x, _, err := ReadSafetensors(bytes.NewReader(file), int64(len(file)))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		want    []float32
		wantErr string
	}{
		{"w", []float32{1, float32(math.Inf(-1)), -0.5}, ""},
		{"i", nil, `tensor "i": dtype I32, want F32`},
		{"nope", nil, `tensor "nope" is missing`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := x.Float32s(tt.name)
			if errString(err) != tt.wantErr || !slices.Equal(got, tt.want) {
				t.Errorf("got %v, %v, want %v, %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
	// A file shorter than its index says.
	short := &Index{R: bytes.NewReader(file[:len(file)-2]), Tensors: x.Tensors}
	_, err = short.Float32s("w")
	if got, want := errString(err), `tensor "w": unexpected EOF`; got != want {
		t.Errorf("truncated file: got %v, want %v", got, want)
	}
}

// The portable byte-order path is what big-endian hosts run; checking it
// against encoding/binary here keeps it honest on little-endian CI.
func TestByteOrderPaths(t *testing.T) {
	vals := []float32{0, 1, -2.5, float32(math.NaN()), math.MaxFloat32, math.SmallestNonzeroFloat32}
	for _, native := range []bool{false, littleEndian} {
		f := make([]float32, len(vals))
		b := float32Bytes(f)
		for i, v := range vals {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
		}
		fromLittleEndian(f, native)
		for i := range vals {
			if math.Float32bits(f[i]) != math.Float32bits(vals[i]) {
				t.Errorf("native=%v decode [%d]: got %v, want %v", native, i, f[i], vals[i])
			}
		}
		enc := toLittleEndian(slices.Clone(vals), native)
		if want := f32le(vals...); !bytes.Equal(enc, want) {
			t.Errorf("native=%v encode: got %x, want %x", native, enc, want)
		}
	}
	if float32Bytes(nil) != nil {
		t.Errorf("float32Bytes(nil): got non-nil, want nil")
	}
}
