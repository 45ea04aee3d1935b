package tensor

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestAdamStepMatchesGo checks adamStep, SSE2 on amd64 with a Go tail,
// against the plain Go loop bit for bit, at lengths around the four
// elements a turn, over random values and edge ones in every lane: zeros
// of both signs, denormals, huge values whose squares overflow, tiny and
// negative v, infinities and NaNs. The non-finite flag must also say
// exactly whether out or the new state holds a NaN or infinity.
func TestAdamStepMatchesGo(t *testing.T) {
	r := rand.New(rand.NewPCG(17, 4))
	edge32 := []float32{
		0, float32(math.Copysign(0, -1)), math.SmallestNonzeroFloat32, -math.SmallestNonzeroFloat32, 1e-40, 1.5e-38,
		math.MaxFloat32, -math.MaxFloat32, 1e20, -3e19,
		float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()),
	}
	edge64 := []float64{
		0, math.Copysign(0, -1), math.SmallestNonzeroFloat64, 1e-310, 1e-45, 1e30, -1e30, 1e200, math.MaxFloat64,
		math.Inf(1), math.Inf(-1), math.NaN(),
	}
	params := []adamParams{
		{c: 1, b1: 0.9, b2: 0.99, eta: 0.1, tau: 1e-9},
		{c: 0.7310585786300049, b1: 0.9, b2: 0.999, eta: 3.1622776e-3, tau: 1e-3},
		{c: 1.0 / 3, b1: 0, b2: 0, eta: 1, tau: math.SmallestNonzeroFloat32},
		{c: 1, b1: 0.5, b2: 0.25, eta: float32(math.Inf(1)), tau: 1e-9},
		{c: 1e-300, b1: 0.99, b2: 0.9999, eta: 1e-30, tau: 1e30},
	}
	var good, bad int
	for trial := range 400 {
		p := params[trial%len(params)]
		p.ob1, p.ob2 = 1-p.b1, 1-p.b2
		n := r.IntN(40)
		edges := trial%3 != 0 // a third of the trials all random
		sums, base := make([]float64, n), make([]float32, n)
		stIn := make([]float32, 2*n)
		for i := range n {
			base[i] = float32(r.NormFloat64())
			sums[i] = float64(base[i]) + r.NormFloat64()*1e-2
			stIn[2*i] = float32(r.NormFloat64() * 1e-3)
			stIn[2*i+1] = float32(r.ExpFloat64() * 1e-6)
			if edges && r.IntN(4) == 0 {
				switch r.IntN(4) {
				case 0:
					base[i] = edge32[r.IntN(len(edge32))]
				case 1:
					sums[i] = edge64[r.IntN(len(edge64))]
				case 2:
					stIn[2*i] = edge32[r.IntN(len(edge32))]
				case 3:
					stIn[2*i+1] = edge32[r.IntN(len(edge32))]
				}
			}
		}
		out, stOut := make([]float32, n), make([]float32, 2*n)
		wantOut, wantSt := make([]float32, n), make([]float32, 2*n)
		gotBad := adamStep(out, stOut, stIn, sums, base, &p)
		wantBad := adamStepGo(wantOut, wantSt, stIn, sums, base, &p)
		if gotBad != wantBad {
			t.Fatalf("trial %d (n %d): not finite %v, the Go loop says %v", trial, n, gotBad, wantBad)
		}
		if finite := allFinite(wantOut) && allFinite(wantSt); wantBad == finite {
			t.Fatalf("trial %d (n %d): not finite %v, but out and state finite %v", trial, n, wantBad, finite)
		}
		if wantBad {
			bad++
		} else {
			good++
		}
		for i := range out {
			if !sameBits(out[i], wantOut[i]) || !sameBits(stOut[2*i], wantSt[2*i]) || !sameBits(stOut[2*i+1], wantSt[2*i+1]) {
				t.Fatalf("trial %d (n %d), element %d (x %v, sum %v, m %v, v %v): out, m, v %v %v %v, want %v %v %v",
					trial, n, i, base[i], sums[i], stIn[2*i], stIn[2*i+1], out[i], stOut[2*i], stOut[2*i+1], wantOut[i], wantSt[2*i], wantSt[2*i+1])
			}
		}
	}
	if good < 50 || bad < 50 {
		t.Fatalf("%d trials finite and %d not; the inputs should give plenty of both", good, bad)
	}
}

// sameBits reports whether a and b have the same bits, or are both NaN:
// which NaN an operation on two NaNs returns depends on operand order.
func sameBits(a, b float32) bool {
	return math.Float32bits(a) == math.Float32bits(b) || a != a && b != b
}
