//go:build !amd64

package tensor

const hasAdam4 = false

func adamStep4(out, stOut, stIn *float32, sums *float64, base *float32, n int, c, b1, b2, ob1, ob2 float64, eta, tau float32) bool {
	panic("unreachable")
}
