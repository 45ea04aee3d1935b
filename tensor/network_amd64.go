package tensor

// hasMinMax8 is true where minMax8 is implemented: SSE2, which every amd64
// processor has.
const hasMinMax8 = true

// minMax8 is compareExchange over n floats of a and b, n a multiple of 8.
//
//go:noescape
func minMax8(a, b *float32, n int)
