package tensor

import "math"

// adamParams are fedadam's per-step constants, hoisted out of the element
// loop by hand: the compiler does not.
type adamParams struct {
	c        float64 // Σ of the inputs' coefficients: Δ = sum − c·x
	b1, b2   float64 // β1, β2
	ob1, ob2 float64 // 1 − β1, 1 − β2
	eta, tau float32 // η with the bias correction of the step, τ
}

// adamStep is fedadam's update of every element i of out: with
// Δ = sums[i] − c·base[i], m and v (stIn[2i], stIn[2i+1]) become
// float32(β1·m + (1−β1)·Δ) and float32(β2·v + (1−β2)·Δ²), computed in
// float64 and written to stOut in the same interleaving, and
// out[i] = float32(x + float64(η·m/(√v + τ))), the step in float32, the
// precision m and v are kept in. It reports whether any of out, m or v is
// not finite, without a branch on the data.
//
// On amd64 all but the last few elements go through SSE2 (adam_amd64.s),
// four a turn, with the roundings of adamStepGo, so that the bits are the
// same whichever runs them.
func adamStep(out, stOut, stIn []float32, sums []float64, base []float32, p *adamParams) (bad bool) {
	n := len(out) &^ 3
	if n > 0 && hasAdam4 {
		bad = adamStep4(&out[0], &stOut[0], &stIn[0], &sums[0], &base[0], n, p.c, p.b1, p.b2, p.ob1, p.ob2, p.eta, p.tau)
	} else {
		n = 0
	}
	return adamStepGo(out[n:], stOut[2*n:], stIn[2*n:], sums[n:len(out)], base[n:len(out)], p) || bad
}

// adamStepGo is adamStep in Go. The explicit float64 conversions keep the
// compiler from fusing a product and a sum into one FMA (GOAMD64=v3 does),
// which rounds once where SSE2 rounds twice.
func adamStepGo(out, stOut, stIn []float32, sums []float64, base []float32, p *adamParams) bool {
	c, b1, b2, ob1, ob2, eta, tau := p.c, p.b1, p.b2, p.ob1, p.ob2, p.eta, p.tau
	stIn, stOut = stIn[:2*len(sums)], stOut[:2*len(sums)]
	base, out = base[:len(sums)], out[:len(sums)]
	var bad uint32
	for i, s := range sums {
		x := float64(base[i])
		d := s - c*x
		mv := stIn[2*i : 2*i+2 : 2*i+2]
		m := float32(float64(b1*float64(mv[0])) + float64(ob1*d))
		v := float32(float64(b2*float64(mv[1])) + float64(ob2*(d*d)))
		nv := stOut[2*i : 2*i+2 : 2*i+2]
		nv[0], nv[1] = m, v
		// SQRTSS and DIVSS take half SQRTSD's and DIVSD's time.
		o := float32(x + float64(eta*m/(sqrt32(v)+tau)))
		out[i] = o
		// An all-ones exponent plus one carries into bit 31.
		bad |= (math.Float32bits(o)&exponentF32 + 1<<23) | (math.Float32bits(m)&exponentF32 + 1<<23) |
			(math.Float32bits(v)&exponentF32 + 1<<23)
	}
	return bad&(1<<31) != 0
}
