package tensor

// hasMinMax8 and hasAxpy8 are true where minMax8, and axpy8 and scale8, are
// implemented: SSE2, which every amd64 processor has.
const (
	hasMinMax8 = true
	hasAxpy8   = true
)

// minMax8 is compareExchange over n floats of a and b, n a multiple of 8.
//
//go:noescape
func minMax8(a, b *float32, n int)

// axpy8 is axpy over n elements, n a multiple of 8.
//
//go:noescape
func axpy8(dst *float64, x *float32, w float64, n int)

// scale8 is scale over n elements, n a multiple of 8.
//
//go:noescape
func scale8(dst *float64, x *float32, w float64, n int)
