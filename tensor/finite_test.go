package tensor

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// le16, le32 and le64 encode elements little-endian.
func le16(v ...uint16) []byte {
	b := make([]byte, 0, 2*len(v))
	for _, x := range v {
		b = binary.LittleEndian.AppendUint16(b, x)
	}
	return b
}

func le32(v ...float32) []byte {
	b := make([]byte, 0, 4*len(v))
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b
}

func le64(v ...float64) []byte {
	b := make([]byte, 0, 8*len(v))
	for _, x := range v {
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(x))
	}
	return b
}

func TestCheckFinite(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	// Half-precision patterns: 1.0, the largest finite value, NaN, +Inf, -Inf.
	const (
		f16One, f16Max, f16NaN, f16Inf, f16NegInf      = 0x3c00, 0x7bff, 0x7e00, 0x7c00, 0xfc00
		bf16One, bf16Max, bf16NaN, bf16Inf, bf16NegInf = 0x3f80, 0x7f7f, 0x7fc0, 0x7f80, 0xff80
	)
	// big has its first NaN beyond the first chunk CheckFinite reads.
	bigN := finiteChunk/4 + 10
	big := make([]float32, bigN)
	big[bigN-3] = float32(nan)
	tests := []struct {
		name    string
		dtype   string
		shape   []int64
		data    []byte
		wantErr string // "" for finite
	}{
		{"f32 finite", F32, []int64{4}, le32(1, -2, math.MaxFloat32, -math.SmallestNonzeroFloat32), ""},
		{"f32 NaN", F32, []int64{3}, le32(1, float32(nan), 2), `tensor "t": element 1 is NaN`},
		{"f32 +Inf", F32, []int64{2}, le32(float32(inf), 0), `tensor "t": element 0 is +Inf`},
		{"f32 -Inf in 2-d", F32, []int64{2, 3}, le32(0, 0, 0, 0, float32(-inf), 0), `tensor "t": element 4 [1 1] is -Inf`},
		{"f32 NaN past the first chunk", F32, []int64{int64(bigN)}, le32(big...), `tensor "t": element ` + itoa(bigN-3) + ` is NaN`},
		{"f64 finite", "F64", []int64{3}, le64(1, math.MaxFloat64, -math.SmallestNonzeroFloat64), ""},
		{"f64 NaN", "F64", []int64{2}, le64(0, nan), `tensor "t": element 1 is NaN`},
		{"f64 -Inf", "F64", []int64{1}, le64(-inf), `tensor "t": element 0 is -Inf`},
		{"f16 finite", "F16", []int64{2}, le16(f16One, f16Max), ""},
		{"f16 NaN", "F16", []int64{3}, le16(f16One, f16One, f16NaN), `tensor "t": element 2 is NaN`},
		{"f16 +Inf", "F16", []int64{1}, le16(f16Inf), `tensor "t": element 0 is +Inf`},
		{"f16 -Inf", "F16", []int64{1, 2}, le16(f16One, f16NegInf), `tensor "t": element 1 [0 1] is -Inf`},
		{"bf16 finite", "BF16", []int64{2}, le16(bf16One, bf16Max), ""},
		{"bf16 NaN", "BF16", []int64{2}, le16(bf16NaN, bf16One), `tensor "t": element 0 is NaN`},
		{"bf16 +Inf", "BF16", []int64{1}, le16(bf16Inf), `tensor "t": element 0 is +Inf`},
		{"bf16 -Inf", "BF16", []int64{1}, le16(bf16NegInf), `tensor "t": element 0 is -Inf`},
		// An integer whose bits spell a float NaN is just a number.
		{"i32 skipped", "I32", []int64{1}, le32(float32(nan)), ""},
		{"empty", F32, []int64{0}, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := mustSafetensors(t, []Span{{Name: "t", DType: tt.dtype, Shape: tt.shape}}, [][]byte{tt.data}, nil)
			x, _, err := ReadSafetensors(bytes.NewReader(file), int64(len(file)))
			if err != nil {
				t.Fatal(err)
			}
			err = CheckFinite(x)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("CheckFinite = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) || !errors.Is(err, ErrNotFinite) {
				t.Fatalf("CheckFinite = %v, want %q wrapping ErrNotFinite", err, tt.wantErr)
			}
		})
	}
}

// TestCheckFiniteNamesFirstTensor checks that the error names the first
// bad tensor in the Index's order, after finite ones.
func TestCheckFiniteNamesFirstTensor(t *testing.T) {
	x := mustFloat32Index(t,
		map[string][]float32{"a": {1, 2}, "b": {3, float32(math.Inf(-1))}, "c": {float32(math.NaN())}},
		map[string][]int64{"a": {2}, "b": {2}, "c": {1}})
	err := CheckFinite(x)
	if want := `tensor "b": element 1 is -Inf: not a finite number`; err == nil || err.Error() != want {
		t.Fatalf("CheckFinite = %v, want %q", err, want)
	}
}

func itoa(n int) string { return strconv.Itoa(n) }

// BenchmarkCheckFinite checks a model of P float32 params stored as a
// safetensors file (see benchParams); bytes are the model's.
func BenchmarkCheckFinite(b *testing.B) {
	p := benchParams(b)
	path := filepath.Join(b.TempDir(), "model.safetensors")
	mustWriteModelFile(b, path, p, 0.5)
	x, f, err := OpenSafetensors(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	b.SetBytes(p * 4)
	b.ReportAllocs()
	for b.Loop() {
		if err := CheckFinite(x); err != nil {
			b.Fatal(err)
		}
	}
}

// TestCheckDeltaFinite: a finite delta that overflows once added to the
// round's model is refused, naming the element; others pass.
func TestCheckDeltaFinite(t *testing.T) {
	model := mustFloat32Index(t, map[string][]float32{"w": {1, 3e38}, "b": {3e38}}, nil)
	tests := []struct {
		name  string
		w, b  []float32
		delta bool
		want  string
	}{
		{name: "fine", w: []float32{2, -1e38}, b: []float32{-3e38}, delta: true},
		{name: "overflows", w: []float32{2, 3e38}, b: []float32{0}, delta: true, want: `tensor "w": element 1 is +Inf once the delta is added`},
		{name: "values, not deltas", w: []float32{2, 3e38}, b: []float32{3e38}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := mustFloat32Index(t, map[string][]float32{"w": tt.w, "b": tt.b}, nil)
			for i := range res.Tensors {
				res.Tensors[i].Delta = tt.delta
			}
			err := CheckDeltaFinite(model, res)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrNotFinite) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want %q", err, tt.want)
			}
		})
	}
}

// TestAllFinite puts each kind of non-finite value at every position of
// short slices, aligned and not, against a test of each float.
func TestAllFinite(t *testing.T) {
	specials := []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), math.MaxFloat32, -math.SmallestNonzeroFloat32, float32(math.Copysign(0, -1))}
	buf := make([]float32, 12)
	for _, start := range []int{0, 1} {
		for n := 0; n+start <= len(buf); n++ {
			for pos := range n {
				for _, sp := range specials {
					x := buf[start : start+n]
					for i := range x {
						x[i] = float32(i) - 3.5
					}
					x[pos] = sp
					want := !math.IsNaN(float64(sp)) && !math.IsInf(float64(sp), 0)
					if got := allFinite(x); got != want {
						t.Fatalf("start %d, %d floats, %v at %d: got %v, want %v", start, n, sp, pos, got, want)
					}
				}
			}
		}
	}
}
