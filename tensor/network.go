package tensor

import (
	"math"
	"unsafe"
)

// This file is the coordinate-wise sort of the robust aggregators. The n
// inputs' chunks are n rows; a sorting network of compare-exchanges between
// rows, each applied down a whole block of columns, sorts every column at
// once. A compare-exchange is a min and a max of unsigned integers, which
// compile to conditional moves: no branch depends on the data, and the
// inner loop runs down two rows in order.

// selectionNetwork returns Batcher's odd-even merge sort network for n rows,
// without the compare-exchanges that cannot change rows lo..hi of the
// result: a median needs far fewer than a full sort.
func selectionNetwork(n, lo, hi int) [][2]int32 {
	var full [][2]int32
	for p := 1; p < n; p <<= 1 {
		for k := p; k >= 1; k >>= 1 {
			for j := k % p; j <= n-1-k; j += 2 * k {
				for i := 0; i <= min(k-1, n-j-k-1); i++ {
					if (i+j)/(2*p) == (i+j+k)/(2*p) {
						full = append(full, [2]int32{int32(i + j), int32(i + j + k)})
					}
				}
			}
		}
	}
	// Walking back from the rows wanted, a compare-exchange matters if it
	// writes a row that matters; then both of its inputs matter.
	need := make([]bool, n)
	for r := lo; r <= hi; r++ {
		need[r] = true
	}
	var kept [][2]int32
	for i := len(full) - 1; i >= 0; i-- {
		ce := full[i]
		if need[ce[0]] || need[ce[1]] {
			need[ce[0]], need[ce[1]] = true, true
			kept = append(kept, ce)
		}
	}
	for i, j := 0, len(kept)-1; i < j; i, j = i+1, j-1 {
		kept[i], kept[j] = kept[j], kept[i]
	}
	return kept
}

// sortColumns applies network to columns [from, to) of rows.
func sortColumns(rows [][]uint32, network [][2]int32, from, to int) {
	for _, ce := range network {
		a, b := rows[ce[0]][from:to], rows[ce[1]][from:to]
		b = b[:len(a)]
		for i, x := range a {
			y := b[i]
			a[i], b[i] = min(x, y), max(x, y)
		}
	}
}

// floatKeys turns x, in place, into unsigned integers in the order of the
// floats (negative below positive, -0 just below +0), and returns them.
func floatKeys(x []float32) []uint32 {
	if len(x) == 0 {
		return nil
	}
	k := unsafe.Slice((*uint32)(unsafe.Pointer(&x[0])), len(x))
	for i, b := range k {
		k[i] = b ^ (uint32(int32(b)>>31) | 0x80000000)
	}
	return k
}

// keyFloat is the float32 of a key of floatKeys.
func keyFloat(k uint32) float32 {
	return math.Float32frombits(k ^ (uint32(int32(^k)>>31) | 0x80000000))
}
