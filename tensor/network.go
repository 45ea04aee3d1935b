package tensor

// This file is the coordinate-wise sort of the robust aggregators. The n
// inputs' chunks are n rows; a sorting network of compare-exchanges between
// rows, each applied down a block of columns, sorts every column at once.
// A compare-exchange down two rows is a min and a max of packed floats on
// amd64 (network_amd64.s): no branch depends on the data.

// selectionNetwork returns Batcher's odd-even merge sort network for n rows,
// without the compare-exchanges that cannot change rows lo..hi of the
// result: a median needs fewer than a full sort.
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

// sortColumns applies network to columns [from, to) of rows, which hold
// finite floats.
func sortColumns(rows [][]float32, network [][2]int32, from, to int) {
	for _, ce := range network {
		compareExchange(rows[ce[0]][from:to], rows[ce[1]][from:to])
	}
}

// compareExchange leaves in a the minima and in b the maxima of a and b,
// column by column.
func compareExchange(a, b []float32) {
	b = b[:len(a)]
	n := len(a) &^ 7
	if n > 0 && hasMinMax8 {
		minMax8(&a[0], &b[0], n)
	} else {
		n = 0
	}
	minMaxGo(a[n:], b[n:])
}

// minMaxGo is compareExchange in Go, with the results of SSE's MINPS and
// MAXPS (the second operand when the two compare equal, as -0 and +0 do),
// so that the assembly and the tail it leaves agree bit for bit.
func minMaxGo(a, b []float32) {
	b = b[:len(a)]
	for i, x := range a {
		y := b[i]
		lo, hi := y, y
		if x < y {
			lo = x
		}
		if x > y {
			hi = x
		}
		a[i], b[i] = lo, hi
	}
}
