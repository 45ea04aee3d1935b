//go:build !amd64

package tensor

const (
	hasMinMax8 = false
	hasAxpy8   = false
)

func minMax8(a, b *float32, n int) { panic("unreachable") }

func axpy8(dst *float64, x *float32, w float64, n int) { panic("unreachable") }

func scale8(dst *float64, x *float32, w float64, n int) { panic("unreachable") }
