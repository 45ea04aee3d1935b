package tensor

import (
	"bytes"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"testing"
)

// constModel is a model of the given layout whose every element is v.
func constModel(tb testing.TB, v float32, sizes map[string]int) *Index {
	tb.Helper()
	tensors := map[string][]float32{}
	for name, n := range sizes {
		tensors[name] = fill(n, func(int) float32 { return v })
	}
	return mustFloat32Index(tb, tensors, nil)
}

// mustAverage runs fedAvg with chunk and returns the result, checked to be
// a valid safetensors file in the model's layout.
func mustAverage(tb testing.TB, model *Index, inputs []Input, chunk int) *Index {
	tb.Helper()
	var out bytes.Buffer
	if err := fedAvg(&out, model, inputs, chunk); err != nil {
		tb.Fatal(err)
	}
	x, _, err := ReadSafetensors(bytes.NewReader(out.Bytes()), int64(out.Len()))
	if err != nil {
		tb.Fatal(err)
	}
	if err := SameLayout(x, model); err != nil {
		tb.Fatalf("result layout: %v", err)
	}
	return x
}

func TestFedAvgMath(t *testing.T) {
	sizes := map[string]int{"w": 10, "b": 3}
	varying := func(seed int) *Index {
		return mustFloat32Index(t, map[string][]float32{
			"w": fill(10, func(i int) float32 { return float32(math.Sin(float64(i*seed + 1))) }),
			"b": fill(3, func(i int) float32 { return float32(i*seed) - 0.5 }),
		}, nil)
	}
	tests := []struct {
		name   string
		inputs []Input
		want   func(name string, i int) float32
		exact  bool
	}{
		{"weighted", []Input{{constModel(t, 1, sizes), 1}, {constModel(t, 3, sizes), 3}},
			func(string, int) float32 { return 2.5 }, true},
		{"equal weights", []Input{{constModel(t, 1, sizes), 7}, {constModel(t, 2, sizes), 7}, {constModel(t, 6, sizes), 7}},
			func(string, int) float32 { return 3 }, true},
		{"zero weight is ignored", []Input{{constModel(t, 100, sizes), 0}, {constModel(t, 5, sizes), 2}},
			func(string, int) float32 { return 5 }, true},
		{"single input is the identity", []Input{{varying(3), 42}},
			func(name string, i int) float32 { x, _ := varying(3).Float32s(name); return x[i] }, true},
		{"identical inputs give themselves back", []Input{{varying(5), 1}, {varying(5), 3}, {varying(5), 1e-3}},
			func(name string, i int) float32 { x, _ := varying(5).Float32s(name); return x[i] }, true},
		{"varying", []Input{{varying(1), 10}, {varying(2), 30}},
			func(name string, i int) float32 {
				a, _ := varying(1).Float32s(name)
				b, _ := varying(2).Float32s(name)
				return float32((10*float64(a[i]) + 30*float64(b[i])) / 40)
			}, false},
	}
	for _, tt := range tests {
		for _, chunk := range []int{1, 4, fedAvgChunk} {
			t.Run(tt.name+"/chunk="+strconv.Itoa(chunk), func(t *testing.T) {
				model := tt.inputs[0].X
				avg := mustAverage(t, model, tt.inputs, chunk)
				for _, s := range avg.Tensors {
					got, err := avg.Float32s(s.Name)
					if err != nil {
						t.Fatal(err)
					}
					for i, g := range got {
						want := tt.want(s.Name, i)
						if tt.exact && g != want || !tt.exact && math.Abs(float64(g-want)) > 1e-6 {
							t.Errorf("%s[%d]: got %v, want %v", s.Name, i, g, want)
						}
					}
				}
			})
		}
	}
}

// Tensors larger than a chunk, whose sizes are not multiples of it, with
// values that differ along the tensor, so a chunk read from the wrong
// offset shows.
func TestFedAvgAcrossChunks(t *testing.T) {
	n := fedAvgChunk*2 + 3
	mk := func(k int) *Index {
		return mustFloat32Index(t, map[string][]float32{
			"a": fill(n, func(i int) float32 { return float32(i%1000 + k) }),
			"b": fill(5, func(i int) float32 { return float32(-i * k) }),
			"c": fill(fedAvgChunk, func(i int) float32 { return float32(i % 7 * k) }),
		}, map[string][]int64{"a": {5, int64(n / 5)}}) // n is a multiple of 5
	}
	inputs := []Input{{mk(1), 1}, {mk(2), 1}, {mk(4), 2}}
	avg := mustAverage(t, inputs[0].X, inputs, fedAvgChunk)
	for _, s := range avg.Tensors {
		got, _ := avg.Float32s(s.Name)
		xs := make([][]float32, len(inputs))
		for k, in := range inputs {
			xs[k], _ = in.X.Float32s(s.Name)
		}
		for i := range got {
			want := float32((float64(xs[0][i]) + float64(xs[1][i]) + 2*float64(xs[2][i])) / 4)
			if got[i] != want {
				t.Fatalf("%s[%d]: got %v, want %v", s.Name, i, got[i], want)
			}
		}
	}
}

func TestFedAvgRefuses(t *testing.T) {
	sizes := map[string]int{"w": 4, "b": 2}
	model := constModel(t, 1, sizes)
	f64 := mustSafetensors(t, []Span{{Name: "b", DType: "F64", Shape: []int64{2}}, {Name: "w", DType: F32, Shape: []int64{4}}},
		[][]byte{make([]byte, 16), make([]byte, 16)}, nil)
	f64x, _, err := ReadSafetensors(bytes.NewReader(f64), int64(len(f64)))
	if err != nil {
		t.Fatal(err)
	}
	shaped := mustFloat32Index(t, map[string][]float32{"w": make([]float32, 4), "b": make([]float32, 2)}, map[string][]int64{"w": {2, 2}})
	full := mustSafetensors(t, []Span{{Name: "b", DType: F32, Shape: []int64{2}}, {Name: "w", DType: F32, Shape: []int64{4}}},
		[][]byte{f32le(1, 2), f32le(1, 2, 3, 4)}, nil)
	fullX, _, err := ReadSafetensors(bytes.NewReader(full), int64(len(full)))
	if err != nil {
		t.Fatal(err)
	}
	truncated := &Index{R: bytes.NewReader(full[:len(full)-1]), Tensors: fullX.Tensors}
	tests := []struct {
		name   string
		model  *Index
		inputs []Input
		want   string
	}{
		{"no inputs", model, nil, "fedavg: no inputs"},
		{"missing tensor", model, []Input{{model, 1}, {constModel(t, 1, map[string]int{"w": 4}), 1}}, `fedavg: input 1: tensor "b" is missing`},
		{"unexpected tensor", model, []Input{{constModel(t, 1, map[string]int{"w": 4, "b": 2, "c": 1}), 1}}, `fedavg: input 0: unexpected tensor "c"`},
		{"shape", model, []Input{{shaped, 1}}, `fedavg: input 0: tensor "w": shape [2 2] differs from the model's [4]`},
		{"dtype", model, []Input{{model, 1}, {f64x, 1}}, `fedavg: input 1: tensor "b": dtype F64, the model's is F32`},
		{"model not F32", f64x, []Input{{f64x, 1}}, `fedavg: tensor "b": dtype F64, only F32 can be averaged`},
		{"negative weight", model, []Input{{model, 2}, {model, -1}}, "fedavg: input 1: weight -1 is not a finite non-negative number"},
		{"NaN weight", model, []Input{{model, math.NaN()}}, "fedavg: input 0: weight NaN is not a finite non-negative number"},
		{"infinite weight", model, []Input{{model, math.Inf(1)}}, "fedavg: input 0: weight +Inf is not a finite non-negative number"},
		{"zero sum", model, []Input{{model, 0}, {model, 0}}, "fedavg: weights sum to 0; the sum must be positive and finite"},
		{"sum overflows", model, []Input{{model, math.MaxFloat64}, {model, math.MaxFloat64}}, "fedavg: weights sum to +Inf; the sum must be positive and finite"},
		{"no model", model, []Input{{nil, 1}}, "fedavg: input 0: no model"},
		{"truncated input", model, []Input{{model, 1}, {truncated, 1}}, `fedavg: input 1: tensor "w": unexpected EOF`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := FedAvg(io.Discard, tt.model, tt.inputs)
			if got := errString(err); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// TestFedAvgStreamsMemory averages four 64 MiB models from files and checks
// that FedAvg allocated a small fraction of one model, not O(model) and
// certainly not O(inputs × model).
func TestFedAvgStreamsMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 256 MiB of temp files")
	}
	const (
		params    = 16 << 20 // 64 MiB of float32
		maxAlloc  = 8 << 20
		numInputs = 4
	)
	dir := t.TempDir()
	inputs := make([]Input, numInputs)
	for k := range inputs {
		path := filepath.Join(dir, "in"+strconv.Itoa(k)+".safetensors")
		mustWriteModelFile(t, path, params, float32(k+1)) // 1, 2, 3, 4
		x, f, err := OpenSafetensors(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		inputs[k] = Input{X: x, Weight: 1}
	}
	out, err := os.Create(filepath.Join(dir, "avg.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()

	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if err := FedAvg(out, inputs[0].X, inputs); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	got := after.TotalAlloc - before.TotalAlloc
	t.Logf("FedAvg of %d x %d MiB allocated %d bytes", numInputs, params*4>>20, got)
	if got > maxAlloc {
		t.Errorf("FedAvg allocated %d bytes, want at most %d for a %d-byte model", got, maxAlloc, params*4)
	}

	// The result is right too, checked in chunks.
	avg, f, err := OpenSafetensors(out.Name())
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if got, want := avg.Params(), int64(params); got != want {
		t.Fatalf("params: got %v, want %v", got, want)
	}
	buf := make([]float32, 1<<18)
	for _, s := range avg.Tensors {
		for done := int64(0); done < s.Size/4; done += int64(len(buf)) {
			x := buf[:min(int64(len(buf)), s.Size/4-done)]
			if err := readFloat32s(avg.R, s.Offset+4*done, x); err != nil {
				t.Fatal(err)
			}
			for i, v := range x {
				if v != 2.5 {
					t.Fatalf("%s[%d]: got %v, want 2.5", s.Name, done+int64(i), v)
				}
			}
		}
	}
}

// TestAxpyMatchesGo checks the SSE2 axpy and scale against the plain Go
// loops, bit for bit, at lengths around the 8 elements a turn and with
// values whose products round.
func TestAxpyMatchesGo(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, n := range []int{0, 1, 7, 8, 9, 16, 31, 100} {
		for _, w := range []float64{0.1, 1.0 / 3, -7.25e-3} {
			x := make([]float32, n)
			acc := make([]float64, n)
			for i := range x {
				x[i] = float32(r.NormFloat64() * 1e3)
				acc[i] = r.NormFloat64()
			}
			if n > 2 {
				x[1] = float32(math.Copysign(0, -1))
			}
			got, want := slices.Clone(acc), slices.Clone(acc)
			axpy(got, x, w)
			for i, v := range x {
				want[i] += w * float64(v)
			}
			gotS, wantS := make([]float64, n), make([]float64, n)
			scale(gotS, x, w)
			for i, v := range x {
				wantS[i] = w * float64(v)
			}
			for i := range want {
				if math.Float64bits(got[i]) != math.Float64bits(want[i]) || math.Float64bits(gotS[i]) != math.Float64bits(wantS[i]) {
					t.Fatalf("n %d, w %v: element %d: axpy %v, scale %v, want %v, %v", n, w, i, got[i], gotS[i], want[i], wantS[i])
				}
			}
		}
	}
}
