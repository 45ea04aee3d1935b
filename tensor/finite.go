package tensor

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// ErrNotFinite is wrapped by CheckFinite's error when a floating-point
// tensor holds a NaN or an infinity.
var ErrNotFinite = errors.New("not a finite number")

// finiteChunk is how many bytes CheckFinite reads at a time: a multiple of
// every element size.
const finiteChunk = 256 << 10

// CheckFinite reads every floating-point tensor of x (F16, BF16, F32, F64),
// one bounded chunk at a time, and returns an error wrapping ErrNotFinite
// that names the first tensor holding a NaN or an infinity and the first
// such element (its position in C order, and its coordinates when the
// tensor has more than one dimension). Tensors of other dtypes cannot hold
// either and are skipped. A FedAvg of a NaN is NaN: one site's broken
// training would spoil the federation's model, so results are checked
// before they leave the site.
func CheckFinite(x *Index) error {
	buf := make([]byte, finiteChunk)
	for _, s := range x.Tensors {
		size, bad := finiteCheck(s.DType)
		if bad == nil {
			continue
		}
		r := x.Section(s)
		var first int64 // index of buf[0]'s element in the tensor
		for {
			n, err := io.ReadFull(r, buf)
			if n%size != 0 {
				return fmt.Errorf("tensor %q: %d bytes do not hold %s elements", s.Name, s.Size, s.DType)
			}
			if i, what := bad(buf[:n]); i >= 0 {
				e := first + int64(i)
				return fmt.Errorf("tensor %q: element %d%s is %s: %w", s.Name, e, coords(s.Shape, e), what, ErrNotFinite)
			}
			first += int64(n / size)
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				break
			}
			if err != nil {
				return fmt.Errorf("tensor %q: %w", s.Name, err)
			}
		}
		if first != s.Elements() {
			return fmt.Errorf("tensor %q: read %d elements, shape %v has %d: %w", s.Name, first, s.Shape, s.Elements(), io.ErrUnexpectedEOF)
		}
	}
	return nil
}

// finiteCheck returns the element size of a floating-point dtype and a
// function that finds the first non-finite element of little-endian bytes
// (-1 if none) and says what it is; nil for other dtypes. An IEEE 754 value
// is NaN or infinite exactly when its exponent bits are all ones: NaN when
// the fraction is not zero, an infinity of the sign bit's sign otherwise.
func finiteCheck(dtype string) (int, func([]byte) (int, string)) {
	switch dtype {
	case "F64":
		return 8, func(b []byte) (int, string) {
			const exp, frac = 0x7ff0_0000_0000_0000, 0x000f_ffff_ffff_ffff
			for i := 0; i+8 <= len(b); i += 8 {
				if v := binary.LittleEndian.Uint64(b[i:]); v&exp == exp {
					return i / 8, special(v&frac != 0, v>>63 != 0)
				}
			}
			return -1, ""
		}
	case F32:
		return 4, func(b []byte) (int, string) {
			const exp, frac = 0x7f80_0000, 0x007f_ffff
			for i := 0; i+4 <= len(b); i += 4 {
				if v := binary.LittleEndian.Uint32(b[i:]); v&exp == exp {
					return i / 4, special(v&frac != 0, v>>31 != 0)
				}
			}
			return -1, ""
		}
	case "F16":
		return 2, half(0x7c00, 0x03ff)
	case "BF16":
		return 2, half(0x7f80, 0x007f)
	}
	return 0, nil
}

// half checks 16-bit floats with the given exponent and fraction masks.
func half(exp, frac uint16) func([]byte) (int, string) {
	return func(b []byte) (int, string) {
		for i := 0; i+2 <= len(b); i += 2 {
			if v := binary.LittleEndian.Uint16(b[i:]); v&exp == exp {
				return i / 2, special(v&frac != 0, v>>15 != 0)
			}
		}
		return -1, ""
	}
}

func special(nan, negative bool) string {
	switch {
	case nan:
		return "NaN"
	case negative:
		return "-Inf"
	}
	return "+Inf"
}

// coords formats element e's coordinates in shape, " [i j k]", for tensors
// of two or more dimensions, where a flat position is hard to read.
func coords(shape []int64, e int64) string {
	if len(shape) < 2 {
		return ""
	}
	c := make([]int64, len(shape))
	for d := len(shape) - 1; d >= 0; d-- {
		if shape[d] > 0 {
			c[d] = e % shape[d]
			e /= shape[d]
		}
	}
	return fmt.Sprint(" ", c)
}

// CheckDeltaFinite checks what the delta tensors of res (F32 spans with
// Delta set: differences from the round's model) become once added to
// model, as FedAvg adds them, in float32: a delta that is finite itself
// can still overflow against a large base, and would then spoil the
// average for everyone. It returns an error wrapping ErrNotFinite naming
// the tensor and element, or nil.
func CheckDeltaFinite(model, res *Index) error {
	const chunk = finiteChunk / 4 * 4
	bb, db := make([]byte, chunk), make([]byte, chunk)
	for _, d := range res.Tensors {
		if !d.Delta {
			continue
		}
		b, ok := model.Lookup(d.Name)
		if !ok || b.DType != F32 || d.DType != F32 || b.Size != d.Size {
			return fmt.Errorf("delta tensor %q does not match the model's", d.Name)
		}
		br, dr := model.Section(b), res.Section(d)
		for off := int64(0); off < d.Size; {
			n := int(min(int64(chunk), d.Size-off))
			if _, err := io.ReadFull(br, bb[:n]); err != nil {
				return fmt.Errorf("tensor %q: %w", d.Name, err)
			}
			if _, err := io.ReadFull(dr, db[:n]); err != nil {
				return fmt.Errorf("tensor %q: %w", d.Name, err)
			}
			for i := 0; i+4 <= n; i += 4 {
				v := math.Float32frombits(binary.LittleEndian.Uint32(bb[i:])) + math.Float32frombits(binary.LittleEndian.Uint32(db[i:]))
				if math.IsInf(float64(v), 0) || math.IsNaN(float64(v)) {
					e := (off + int64(i)) / 4
					return fmt.Errorf("tensor %q: element %d%s is %v once the delta is added to the round's model: %w", d.Name, e, coords(d.Shape, e), v, ErrNotFinite)
				}
			}
			off += int64(n)
		}
	}
	return nil
}
