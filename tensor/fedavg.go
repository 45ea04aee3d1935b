package tensor

import (
	"errors"
	"fmt"
	"io"
	"math"
)

// fedAvgChunk is how many elements FedAvg reads from each input at a time.
// Its buffers (256 KiB read, 512 KiB of float64 sums) stay in a core's L2
// cache between the read and the sum; 1<<18 measured a few percent slower,
// 1<<20 clearly slower, and a read of 256 KiB already costs little per byte.
const fedAvgChunk = 1 << 16

// Input is one model to average and its weight, normally the number of
// samples it was trained on (TaskResults' data_size).
type Input struct {
	X      *Index
	Weight float64
}

// FedAvg writes to w, as a safetensors file, the weighted mean of inputs,
// tensor by tensor, in the layout of model: its names, shapes and order.
// Every tensor must be F32 and every input must have model's layout (see
// SameLayout). A mean that is not finite (a NaN in an input, or a sum
// that overflows float32) is an error naming the tensor and element: w
// then holds a partial file, which the caller discards. Weights must be finite and non-negative and are normalised by
// their sum, which must be positive; inputs of weight 0 are not read.
//
// Memory stays O(one chunk) whatever the model and the number of inputs:
// for each chunk of each tensor, every input's chunk in turn is
// accumulated, and the mean is written. An input in a file (its Index
// reads an *os.File) is mapped read-only on Linux and summed where it lies,
// without the copy pread makes; others are read into one reused buffer.
// Such a file must not change while FedAvg runs: one truncated under it is
// an error naming the file. w is not closed.
//
// An input tensor whose span has Delta set holds the difference from
// model's tensor: model's value is added back before averaging, so the
// result is model plus the weighted mean of the deltas.
//
// Sums are float64: it costs about 10% of throughput over float32 and buys
// a result that does not drift with the number of inputs, and that is
// exactly x when every input is x.
func FedAvg(w io.Writer, model *Index, inputs []Input) error {
	if err := fedAvg(w, model, inputs, fedAvgChunk); err != nil {
		return fmt.Errorf("fedavg: %w", err)
	}
	return nil
}

func fedAvg(w io.Writer, model *Index, inputs []Input, chunk int) error {
	if len(inputs) == 0 {
		return errors.New("no inputs")
	}
	for _, s := range model.Tensors {
		if s.DType != F32 {
			return fmt.Errorf("tensor %q: dtype %s, only %s can be averaged", s.Name, s.DType, F32)
		}
		if s.Size != 4*s.Elements() {
			return fmt.Errorf("tensor %q: %d bytes do not hold shape %v", s.Name, s.Size, s.Shape)
		}
	}
	var sum float64
	for k, in := range inputs {
		if in.X == nil {
			return fmt.Errorf("input %d: no model", k)
		}
		if math.IsNaN(in.Weight) || math.IsInf(in.Weight, 0) || in.Weight < 0 {
			return fmt.Errorf("input %d: weight %v is not a finite non-negative number", k, in.Weight)
		}
		if err := SameLayout(in.X, model); err != nil {
			return fmt.Errorf("input %d: %w", k, err)
		}
		sum += in.Weight
	}
	if !(sum > 0) || math.IsInf(sum, 0) {
		return fmt.Errorf("weights sum to %v; the sum must be positive and finite", sum)
	}
	type active struct {
		k int
		x *Index
		w float64
	}
	var act []active
	for k, in := range inputs {
		if in.Weight > 0 {
			act = append(act, active{k: k, x: in.X, w: in.Weight / sum})
		}
	}

	sw, err := NewSafetensorsWriter(w, model.Tensors, nil)
	if err != nil {
		return err
	}
	xs := make([]*Index, 0, len(act)+1)
	xs = append(xs, model)
	for _, a := range act {
		xs = append(xs, a.x)
	}
	ms := mapIndexes(xs...)
	defer ms.close()
	acc := make([]float64, chunk)
	buf := make([]float32, chunk) // an input's chunk, when it is not mapped
	out := make([]float32, chunk)
	var base []float32 // model's chunk, when an input sends a delta
	offs := make([]int64, len(act))
	delta := make([]bool, len(act))
	err = ms.guard(func() error {
		for _, s := range model.Tensors {
			anyDelta := false
			for j, a := range act {
				in, _ := a.x.Lookup(s.Name) // present: SameLayout said so
				offs[j], delta[j] = in.Offset, in.Delta
				anyDelta = anyDelta || in.Delta
			}
			if anyDelta && base == nil {
				base = make([]float32, chunk)
			}
			n := s.Size / 4
			for done := int64(0); done < n; done += int64(chunk) {
				m := int(min(int64(chunk), n-done))
				sums, o := acc[:m], out[:m]
				if anyDelta {
					if err := ms.read(model.R, s.Offset+4*done, base[:m]); err != nil {
						return fmt.Errorf("model: tensor %q: %w", s.Name, err)
					}
				}
				for j, a := range act {
					var x []float32
					var err error
					if delta[j] {
						// base + delta in float32, as OpenFL's apply_delta
						// rebuilds a collaborator's tensor.
						x = buf[:m]
						err = ms.read(a.x.R, offs[j]+4*done, x)
						if err == nil {
							for i, b := range base[:m] {
								x[i] += b
							}
						}
					} else {
						x, err = ms.view(a.x.R, offs[j]+4*done, buf[:m])
					}
					if err != nil {
						return fmt.Errorf("input %d: tensor %q: %w", a.k, s.Name, err)
					}
					if j == 0 {
						scale(sums, x, a.w)
					} else {
						axpy(sums, x, a.w)
					}
				}
				for i, v := range sums {
					f := float32(v)
					if math.Float32bits(f)&exponentF32 == exponentF32 {
						// A NaN in, or finite values whose mean overflows
						// float32: no global model may hold it.
						return fmt.Errorf("tensor %q: element %d averages to %v; a global model holds finite values only", s.Name, done+int64(i), f)
					}
					o[i] = f
				}
				if _, err := sw.Write(toLittleEndian(o, littleEndian)); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	return sw.Close()
}

// scale sets dst to w·x; starting with it saves zeroing the accumulator.
func scale(dst []float64, x []float32, w float64) {
	x = x[:len(dst)]
	n := len(dst) &^ 7
	if n > 0 && hasAxpy8 {
		scale8(&dst[0], &x[0], w, n)
	} else {
		n = 0
	}
	for i, v := range x[n:] {
		dst[n+i] = w * float64(v)
	}
}

// axpy adds w·x to dst. The SSE2 loop (network_amd64.s) does two elements
// an instruction, with the same roundings as this Go loop, which the Go
// compiler does not vectorize.
func axpy(dst []float64, x []float32, w float64) {
	x = x[:len(dst)]
	n := len(dst) &^ 7
	if n > 0 && hasAxpy8 {
		axpy8(&dst[0], &x[0], w, n)
	} else {
		n = 0
	}
	for i, v := range x[n:] {
		dst[n+i] += w * float64(v)
	}
}
