package tensor

// hasAdam4 is true where adamStep4 is implemented: SSE2, which every amd64
// processor has.
const hasAdam4 = true

// adamStep4 is adamStep over n elements, n a multiple of 4: out[i],
// stOut[2i], stOut[2i+1] from sums[i], base[i], stIn[2i], stIn[2i+1]. It
// reports whether any value it wrote is not finite.
//
//go:noescape
func adamStep4(out, stOut, stIn *float32, sums *float64, base *float32, n int, c, b1, b2, ob1, ob2 float64, eta, tau float32) bool
