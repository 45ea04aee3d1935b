//go:build !amd64

package tensor

const hasMinMax8 = false

func minMax8(a, b *float32, n int) { panic("unreachable") }
