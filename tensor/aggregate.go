package tensor

import (
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"unsafe"
)

// The aggregators a job may choose (job.json "aggregator.name").
const (
	AggFedAvg      = "fedavg"
	AggFedAvgM     = "fedavgm"
	AggFedAdam     = "fedadam"
	AggFedYogi     = "fedyogi"
	AggFedAdagrad  = "fedadagrad"
	AggMedian      = "median"
	AggTrimmedMean = "trimmed_mean"
)

// Aggregator is how a round's reports become the next global model. Names
// and the meaning of the parameters follow Reddi et al., "Adaptive Federated
// Optimization" (2021), Algorithm 2, and Flower's strategies of the same
// names. Parameters an aggregator does not use are ignored.
type Aggregator struct {
	Name string
	// Eta is the server learning rate (fedavgm and the adaptive ones).
	Eta float64
	// Momentum is fedavgm's server momentum.
	Momentum float64
	// Beta1 and Beta2 are the decay of the first and second moments
	// (fedadam, fedyogi; fedadagrad uses Beta1 only).
	Beta1, Beta2 float64
	// Tau bounds the adaptive step where the second moment is small.
	Tau float64
	// Trim is trimmed_mean's fraction dropped at each end, per coordinate.
	Trim float64
	// ClipNorm, when positive, scales each site's update x_i − x down to
	// at most this L2 norm over the whole model before aggregation.
	ClipNorm float64
}

// StateVectors names the per-parameter vectors of server optimizer state a
// aggregates with, in the order the state file interleaves them; nil for
// an aggregator without state.
func (a Aggregator) StateVectors() []string {
	switch a.Name {
	case AggFedAvgM:
		return []string{"v"}
	case AggFedAdam, AggFedYogi:
		return []string{"m", "v"}
	case AggFedAdagrad:
		if a.Beta1 == 0 {
			return []string{"v"} // m is Δ itself
		}
		return []string{"m", "v"}
	}
	return nil
}

// robust reports whether a is coordinate-wise order statistics, which need
// every input's chunk at once.
func (a Aggregator) robust() bool { return a.Name == AggMedian || a.Name == AggTrimmedMean }

// State is the server optimizer state Aggregate reads and writes. A state
// file is safetensors with one F32 tensor per model tensor, of the same name
// and shape [elements, k]: element i's k vectors (StateVectors) side by
// side, so that it streams chunk by chunk with the model. Its metadata
// names the aggregator, its vectors and the step that wrote it.
type State struct {
	// Step is the number of this aggregation, from 1: fedadam's bias
	// correction depends on it.
	Step int
	// In is the state the previous step wrote; nil at step 1 (all zeros).
	In *Index
	// Out receives the new state. It must be set for an aggregator with
	// state, and is not closed.
	Out io.Writer
}

// Metadata keys of a state file.
const (
	stateMetaAggregator = "aggregator"
	stateMetaVectors    = "vectors"
	stateMetaStep       = "step"
)

// aggChunk is how many elements of each input a worker reads at a time for
// the mean-based aggregators, as FedAvg; robust ones read robustChunk, so
// that every input's chunk fits in a core's L2 cache together.
const (
	aggChunk    = fedAvgChunk
	robustChunk = 1 << 13
	// sortBlock is how many coordinates one pass of the sorting network
	// sweeps: its rows stay in L1.
	sortBlock = 512
)

// Aggregate writes to w, as a safetensors file in model's layout, the next
// global model from model (the current one, x) and the round's inputs
// (the x_i, weighted by Weight), and for an aggregator with state the new
// state to st.Out. Conventions are FedAvg's: F32 tensors only, the layout of
// model in every input, inputs of weight 0 not read, delta inputs added back
// to model, and a result that is not finite an error naming the element.
// fedavg without clip_norm writes exactly the bytes FedAvg writes, in
// parallel.
//
// With Δ = Σ w_i (x_i − x) / Σ w_i, per element, in float64:
//
//	fedavg      x' = x + Δ
//	fedavgm     v = β·v + Δ;  x' = x + η·v
//	fedadagrad  m = β1·m + (1−β1)·Δ;  v = v + Δ²;  x' = x + η·m/(√v + τ)
//	fedadam     m = β1·m + (1−β1)·Δ;  v = β2·v + (1−β2)·Δ²;
//	            x' = x + η·√(1−β2^t)/(1−β1^t)·m/(√v + τ)
//	fedyogi     m as fedadam;  v = v − (1−β2)·Δ²·sign(v − Δ²);  x' = x + η·m/(√v + τ)
//	median      x' = the median of the x_i (the mean of the middle two for even n)
//	trimmed     x' = the mean of the x_i without the ⌊trim·n⌋ smallest and largest
//
// median and trimmed_mean are unweighted. State (m, v) starts at zero and
// is stored as float32. With ClipNorm C, every x_i is first replaced by
// x + min(1, C/‖x_i − x‖₂)·(x_i − x), the norm over the whole model, which
// costs a first pass over the inputs.
//
// Memory is O(workers × chunk) for the mean-based aggregators and
// O(workers × inputs × chunk) for the robust ones, whatever the model's
// size. Chunks are shared among GOMAXPROCS workers and written in order.
// Files (model, inputs, state) are read as FedAvg reads them: mapped where
// possible, and must not change while Aggregate runs.
//
// fedavg without clip_norm is FedAvg itself, which writes the same bytes:
// its one core streams faster than the shared engine's two on the 2 vCPU
// machine of BENCHMARKS.md (figure 5 against figure 8's first row).
func Aggregate(w io.Writer, model *Index, inputs []Input, a Aggregator, st State) error {
	if a.Name == AggFedAvg && a.ClipNorm <= 0 {
		if err := checkAggregator(a); err != nil {
			return fmt.Errorf("%s: %w", a.Name, err)
		}
		return FedAvg(w, model, inputs) // its errors say "fedavg: "
	}
	if err := aggregate(w, model, inputs, a, st, 0); err != nil {
		return fmt.Errorf("%s: %w", a.Name, err)
	}
	return nil
}

func aggregate(w io.Writer, model *Index, inputs []Input, a Aggregator, st State, chunk int) error {
	if err := checkAggregator(a); err != nil {
		return err
	}
	e, err := newEngine(model, inputs, a, st, chunk)
	if err != nil {
		return err
	}
	return e.run(w)
}

// engine is one aggregation: the checked inputs and the per-element step.
type engine struct {
	a     Aggregator
	model *Index
	act   []activeInput
	coef  float64 // Σ of the act's coefficients: Δ = Σ c_i x_i − coef·x
	st    State
	k     int // state vectors per element
	etaT  float64
	chunk int
	// trimLo, trimHi are the sorted rows a robust aggregator averages.
	trimLo, trimHi int
	network        [][2]int32
	// needBase is set when a step reads the model's chunk: for deltas, the
	// clip, or the update of an optimizer.
	needBase bool
	// ms maps the files read, while run runs.
	ms *mappings
}

// activeInput is an input of positive weight.
type activeInput struct {
	k    int     // position in the caller's inputs
	x    *Index  // its model
	coef float64 // normalised weight, times its clip factor
	clip float64 // clip factor, 1 without clipping
}

func newEngine(model *Index, inputs []Input, a Aggregator, st State, chunk int) (*engine, error) {
	if len(inputs) == 0 {
		return nil, errors.New("no inputs")
	}
	for _, s := range model.Tensors {
		if s.DType != F32 {
			return nil, fmt.Errorf("tensor %q: dtype %s, only %s can be aggregated", s.Name, s.DType, F32)
		}
		if s.Size != 4*s.Elements() {
			return nil, fmt.Errorf("tensor %q: %d bytes do not hold shape %v", s.Name, s.Size, s.Shape)
		}
	}
	var sum float64
	for k, in := range inputs {
		if in.X == nil {
			return nil, fmt.Errorf("input %d: no model", k)
		}
		if math.IsNaN(in.Weight) || math.IsInf(in.Weight, 0) || in.Weight < 0 {
			return nil, fmt.Errorf("input %d: weight %v is not a finite non-negative number", k, in.Weight)
		}
		if err := SameLayout(in.X, model); err != nil {
			return nil, fmt.Errorf("input %d: %w", k, err)
		}
		sum += in.Weight
	}
	if !(sum > 0) || math.IsInf(sum, 0) {
		return nil, fmt.Errorf("weights sum to %v; the sum must be positive and finite", sum)
	}
	e := &engine{a: a, model: model, st: st, k: len(a.StateVectors()), chunk: chunk}
	for k, in := range inputs {
		if in.Weight > 0 {
			e.act = append(e.act, activeInput{k: k, x: in.X, coef: in.Weight / sum, clip: 1})
		}
	}
	e.needBase = a.ClipNorm > 0 || !(a.Name == AggFedAvg || a.robust())
	for _, in := range e.act {
		for _, s := range in.x.Tensors {
			e.needBase = e.needBase || s.Delta
		}
	}
	if e.chunk == 0 {
		e.chunk = aggChunk
		if a.robust() {
			e.chunk = robustChunk
		}
	}
	if e.k > 0 {
		if st.Step < 1 {
			return nil, fmt.Errorf("state step %d; steps count from 1", st.Step)
		}
		if st.Out == nil {
			return nil, errors.New("no writer for the new server state")
		}
		if st.In != nil {
			if err := e.checkState(st.In); err != nil {
				return nil, fmt.Errorf("server state: %w", err)
			}
		}
	}
	if a.Name == AggFedAdam {
		t := float64(st.Step)
		e.etaT = a.Eta * math.Sqrt(1-math.Pow(a.Beta2, t)) / (1 - math.Pow(a.Beta1, t))
	}
	if a.robust() {
		n := len(e.act)
		if a.Name == AggMedian {
			e.trimLo, e.trimHi = (n-1)/2, n/2
		} else {
			cut := int(math.Floor(a.Trim * float64(n)))
			e.trimLo, e.trimHi = cut, n-1-cut
		}
		e.network = selectionNetwork(n, e.trimLo, e.trimHi)
	}
	return e, nil
}

// checkAggregator refuses parameters outside their ranges, for callers that
// build an Aggregator by hand; job.json's are checked when it is parsed.
func checkAggregator(a Aggregator) error {
	bad := func(name string, v float64, want string) error {
		return fmt.Errorf("%s %v: must be %s", name, v, want)
	}
	fin := func(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
	if !fin(a.ClipNorm) || a.ClipNorm < 0 {
		return bad("clip_norm", a.ClipNorm, "a finite number ≥ 0")
	}
	switch a.Name {
	case AggFedAvg, AggMedian:
	case AggTrimmedMean:
		if !(a.Trim >= 0 && a.Trim < 0.5) {
			return bad("trim", a.Trim, "in [0, 0.5)")
		}
	case AggFedAvgM, AggFedAdam, AggFedYogi, AggFedAdagrad:
		if !fin(a.Eta) || a.Eta <= 0 {
			return bad("eta", a.Eta, "a finite number > 0")
		}
		if !(a.Momentum >= 0 && a.Momentum < 1) {
			return bad("momentum", a.Momentum, "in [0, 1)")
		}
		if !(a.Beta1 >= 0 && a.Beta1 < 1) {
			return bad("beta_1", a.Beta1, "in [0, 1)")
		}
		if !(a.Beta2 >= 0 && a.Beta2 < 1) {
			return bad("beta_2", a.Beta2, "in [0, 1)")
		}
		if a.Name != AggFedAvgM && (!fin(a.Tau) || a.Tau <= 0) {
			return bad("tau", a.Tau, "a finite number > 0")
		}
	default:
		return fmt.Errorf("unknown aggregator %q", a.Name)
	}
	return nil
}

// StateMetadata is the metadata of the state file a writes at step.
func (a Aggregator) StateMetadata(step int) map[string]string {
	return map[string]string{stateMetaAggregator: a.Name, stateMetaVectors: strings.Join(a.StateVectors(), ","), stateMetaStep: strconv.Itoa(step)}
}

// StateSpecs is the layout of a's state file for model.
func (a Aggregator) StateSpecs(model *Index) []Span {
	k := int64(len(a.StateVectors()))
	specs := make([]Span, len(model.Tensors))
	for i, s := range model.Tensors {
		specs[i] = Span{Name: s.Name, DType: F32, Shape: []int64{s.Elements(), k}}
	}
	return specs
}

// checkState checks that in has the layout of e's state for its model.
func (e *engine) checkState(in *Index) error {
	want := e.a.StateSpecs(e.model)
	if len(in.Tensors) != len(want) {
		return fmt.Errorf("%d tensors, the model's state has %d", len(in.Tensors), len(want))
	}
	for _, w := range want {
		s, ok := in.Lookup(w.Name)
		if !ok {
			return fmt.Errorf("no tensor %q", w.Name)
		}
		if s.DType != F32 || len(s.Shape) != 2 || s.Shape[0] != w.Shape[0] || s.Shape[1] != w.Shape[1] {
			return fmt.Errorf("tensor %q: %s %v, want %s %v", s.Name, s.DType, s.Shape, F32, w.Shape)
		}
	}
	return nil
}

// piece is one chunk of one tensor: elements [off, off+n) of tensor t.
type piece struct {
	t   int
	off int64
	n   int
}

// worker holds one worker's buffers.
type worker struct {
	xs    [][]float32 // each input's chunk
	base  []float32   // the model's chunk
	acc   []float64
	out   []float32
	stIn  []float32
	stOut []float32
	err   error
	norms []float64 // clip pass: Σ (x_i − x)² per input
}

func (e *engine) newWorker() *worker {
	wk := &worker{base: make([]float32, e.chunk), out: make([]float32, e.chunk), acc: make([]float64, e.chunk)}
	if e.a.robust() {
		wk.xs = make([][]float32, len(e.act))
		for j := range wk.xs {
			wk.xs[j] = make([]float32, e.chunk)
		}
	} else {
		wk.xs = [][]float32{make([]float32, e.chunk)}
	}
	if e.k > 0 {
		wk.stIn = make([]float32, e.k*e.chunk)
		wk.stOut = make([]float32, e.k*e.chunk)
	}
	return wk
}

// pieces lists the chunks of the model in file order.
func (e *engine) pieces() []piece {
	var ps []piece
	for t, s := range e.model.Tensors {
		n := s.Size / 4
		for off := int64(0); off < n; off += int64(e.chunk) {
			ps = append(ps, piece{t: t, off: off, n: int(min(int64(e.chunk), n-off))})
		}
	}
	return ps
}

func (e *engine) run(w io.Writer) error {
	xs := []*Index{e.model, e.st.In}
	for _, a := range e.act {
		xs = append(xs, a.x)
	}
	e.ms = mapIndexes(xs...)
	defer e.ms.close()
	workers := make([]*worker, max(1, min(runtime.GOMAXPROCS(0), 8)))
	for i := range workers {
		workers[i] = e.newWorker()
	}
	ps := e.pieces()
	if e.a.ClipNorm > 0 {
		if err := e.clipFactors(workers, ps); err != nil {
			return err
		}
	}
	for _, a := range e.act {
		e.coef += a.coef
	}
	sw, err := NewSafetensorsWriter(w, e.model.Tensors, nil)
	if err != nil {
		return err
	}
	var stw *SafetensorsWriter
	if e.k > 0 {
		if stw, err = NewSafetensorsWriter(e.st.Out, e.a.StateSpecs(e.model), e.a.StateMetadata(e.st.Step)); err != nil {
			return err
		}
	}
	err = e.parallel(workers, ps, e.step, func(wk *worker, p piece) error {
		if _, err := sw.Write(toLittleEndian(wk.out[:p.n], littleEndian)); err != nil {
			return err
		}
		if stw != nil {
			if _, err := stw.Write(toLittleEndian(wk.stOut[:e.k*p.n], littleEndian)); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if stw != nil {
		if err := stw.Close(); err != nil {
			return err
		}
	}
	return sw.Close()
}

// parallel runs do on every piece, len(workers) at a time, each batch's
// pieces in order handed to done before the next batch starts.
func (e *engine) parallel(workers []*worker, ps []piece, do func(*worker, piece) error, done func(*worker, piece) error) error {
	var wg sync.WaitGroup
	for start := 0; start < len(ps); start += len(workers) {
		batch := ps[start:min(start+len(workers), len(ps))]
		for i, p := range batch {
			wk := workers[i]
			if i == len(batch)-1 {
				wk.err = e.ms.guard(func() error { return do(wk, p) }) // the caller's goroutine takes the last
				continue
			}
			wg.Go(func() { wk.err = e.ms.guard(func() error { return do(wk, p) }) })
		}
		wg.Wait()
		for i, p := range batch {
			if err := workers[i].err; err != nil {
				return err
			}
			if done != nil {
				if err := done(workers[i], p); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// readInput reads input j's chunk p into dst, with a delta added back to
// base (model's chunk, read when any input is a delta).
func (e *engine) readInput(j int, p piece, dst, base []float32) error {
	a := e.act[j]
	s := e.model.Tensors[p.t]
	in, _ := a.x.Lookup(s.Name) // present: SameLayout said so
	if err := e.ms.read(a.x.R, in.Offset+4*p.off, dst); err != nil {
		return fmt.Errorf("input %d: tensor %q: %w", a.k, s.Name, err)
	}
	if in.Delta {
		// base + delta in float32, as FedAvg.
		for i, b := range base[:len(dst)] {
			dst[i] += b
		}
	}
	return nil
}

// viewInput is readInput for a caller that only reads the values: an
// input that is not a delta is returned where it is mapped, buf is used
// otherwise.
func (e *engine) viewInput(j int, p piece, buf, base []float32) ([]float32, error) {
	a := e.act[j]
	s := e.model.Tensors[p.t]
	in, _ := a.x.Lookup(s.Name) // present: SameLayout said so
	if in.Delta {
		return buf, e.readInput(j, p, buf, base)
	}
	x, err := e.ms.view(a.x.R, in.Offset+4*p.off, buf)
	if err != nil {
		return nil, fmt.Errorf("input %d: tensor %q: %w", a.k, s.Name, err)
	}
	return x, nil
}

// viewBase returns model's chunk p, where it is mapped or read into buf.
func (e *engine) viewBase(p piece, buf []float32) ([]float32, error) {
	s := e.model.Tensors[p.t]
	x, err := e.ms.view(e.model.R, s.Offset+4*p.off, buf)
	if err != nil {
		return nil, fmt.Errorf("model: tensor %q: %w", s.Name, err)
	}
	return x, nil
}

// clipFactors is the first pass of clip_norm: every input's distance from
// the model, then its factor.
func (e *engine) clipFactors(workers []*worker, ps []piece) error {
	for _, wk := range workers {
		wk.norms = make([]float64, len(e.act))
	}
	err := e.parallel(workers, ps, func(wk *worker, p piece) error {
		base, err := e.viewBase(p, wk.base[:p.n])
		if err != nil {
			return err
		}
		for j := range e.act {
			x, err := e.viewInput(j, p, wk.xs[0][:p.n], base)
			if err != nil {
				return err
			}
			var s float64
			for i, v := range x {
				d := float64(v) - float64(base[i])
				s += d * d
			}
			wk.norms[j] += s
		}
		return nil
	}, nil)
	if err != nil {
		return err
	}
	for j := range e.act {
		var sq float64
		for _, wk := range workers {
			sq += wk.norms[j]
		}
		if norm := math.Sqrt(sq); norm > e.a.ClipNorm {
			e.act[j].clip = e.a.ClipNorm / norm
			e.act[j].coef *= e.act[j].clip
		}
	}
	return nil
}

// step computes piece p into wk.out (and wk.stOut).
func (e *engine) step(wk *worker, p piece) error {
	base := wk.base[:p.n]
	if e.needBase {
		var err error
		if base, err = e.viewBase(p, base); err != nil {
			return err
		}
	}
	if e.a.robust() {
		return e.robustStep(wk, p, base)
	}
	sums := wk.acc[:p.n]
	for j, a := range e.act {
		x, err := e.viewInput(j, p, wk.xs[0][:p.n], base)
		if err != nil {
			return err
		}
		if j == 0 {
			scale(sums, x, a.coef)
		} else {
			axpy(sums, x, a.coef)
		}
	}
	out := wk.out[:p.n]
	var stIn []float32
	if e.k > 0 {
		stIn = wk.stIn[:e.k*p.n]
		if e.st.In == nil {
			clear(stIn)
		} else {
			s, _ := e.st.In.Lookup(e.model.Tensors[p.t].Name) // checkState said so
			var err error
			if stIn, err = e.ms.view(e.st.In.R, s.Offset+4*int64(e.k)*p.off, stIn); err != nil {
				return fmt.Errorf("server state: tensor %q: %w", s.Name, err)
			}
		}
	}
	stOut := wk.stOut[:e.k*p.n]
	a, c := e.a, e.coef
	switch a.Name {
	case AggFedAvg:
		if a.ClipNorm <= 0 {
			// FedAvg's arithmetic, so its bytes.
			for i, s := range sums {
				out[i] = float32(s)
			}
			break
		}
		for i, s := range sums {
			out[i] = float32(float64(base[i]) + (s - c*float64(base[i])))
		}
	case AggFedAvgM:
		for i, s := range sums {
			x := float64(base[i])
			v := a.Momentum*float64(stIn[i]) + (s - c*x)
			stOut[i] = float32(v)
			out[i] = float32(x + a.Eta*v)
		}
	case AggFedAdagrad:
		if e.k == 1 {
			for i, s := range sums {
				x := float64(base[i])
				d := s - c*x
				v := float64(stIn[i]) + d*d
				stOut[i] = float32(v)
				out[i] = float32(x + float64(float32(a.Eta)*float32(d)/(sqrt32(float32(v))+float32(a.Tau))))
			}
			break
		}
		stIn, stOut = stIn[:2*len(sums)], stOut[:2*len(sums)]
		for i, s := range sums {
			x := float64(base[i])
			d := s - c*x
			m := a.Beta1*float64(stIn[2*i]) + (1-a.Beta1)*d
			v := float64(stIn[2*i+1]) + d*d
			stOut[2*i], stOut[2*i+1] = float32(m), float32(v)
			out[i] = float32(x + float64(float32(a.Eta)*float32(m)/(sqrt32(float32(v))+float32(a.Tau))))
		}
	case AggFedAdam:
		ap := adamParams{c: c, b1: a.Beta1, b2: a.Beta2, ob1: 1 - a.Beta1, ob2: 1 - a.Beta2, eta: float32(e.etaT), tau: float32(a.Tau)}
		// Finiteness is checked by the step, while the values are in
		// registers, rather than by two more passes.
		if !adamStep(out, stOut, stIn, sums, base, &ap) {
			return nil
		}
	case AggFedYogi:
		stIn, stOut = stIn[:2*len(sums)], stOut[:2*len(sums)]
		b1, b2, eta, tau := a.Beta1, a.Beta2, a.Eta, a.Tau
		for i, s := range sums {
			x := float64(base[i])
			d := s - c*x
			m := b1*float64(stIn[2*i]) + (1-b1)*d
			v0, d2 := float64(stIn[2*i+1]), d*d
			v := v0
			if v0 > d2 {
				v -= (1 - b2) * d2
			} else if v0 < d2 {
				v += (1 - b2) * d2
			}
			stOut[2*i], stOut[2*i+1] = float32(m), float32(v)
			out[i] = float32(x + float64(float32(eta)*float32(m)/(sqrt32(float32(v))+float32(tau))))
		}
	}
	if err := e.checkFinite(p, out); err != nil {
		return err
	}
	return e.checkFinite(p, stOut)
}

// checkFinite refuses a NaN or infinity in out, the result (or new state)
// of piece p.
func (e *engine) checkFinite(p piece, out []float32) error {
	if allFinite(out) {
		return nil
	}
	for i, f := range out {
		if math.Float32bits(f)&exponentF32 == exponentF32 {
			k := max(e.k, 1)
			if len(out) == p.n {
				k = 1
			}
			what := "the model"
			if k > 1 || len(out) != p.n {
				what = "the server state"
			}
			return fmt.Errorf("tensor %q: element %d of %s is %v; a global model holds finite values only", e.model.Tensors[p.t].Name, p.off+int64(i/k), what, f)
		}
	}
	return nil
}

// robustStep computes median or trimmed_mean of piece p: every input's
// chunk is read and sorted per coordinate by a network pruned to the rows
// the result needs.
func (e *engine) robustStep(wk *worker, p piece, base []float32) error {
	rows := wk.xs
	for j := range e.act {
		x := wk.xs[j][:p.n]
		if err := e.readInput(j, p, x, base); err != nil {
			return err
		}
		if c := e.act[j].clip; c != 1 {
			for i, v := range x {
				b := float64(base[i])
				x[i] = float32(b + c*(float64(v)-b))
			}
		}
		// The network's min and max would drop a NaN: refuse it here.
		if err := e.checkFinite(p, x); err != nil {
			return fmt.Errorf("input %d: %w", e.act[j].k, err)
		}
	}
	out := wk.out[:p.n]
	lo, hi := e.trimLo, e.trimHi
	median := lo == hi || e.a.Name == AggMedian
	cnt := float64(hi - lo + 1)
	var acc [sortBlock]float64
	// Each block of columns is sorted, then its result computed while its
	// rows are still in L1: the kept rows summed into a block-sized
	// accumulator, row after row in order, as the reference does.
	for b := 0; b < p.n; b += sortBlock {
		end := min(b+sortBlock, p.n)
		sortColumns(rows, e.network, b, end)
		o := out[b:end]
		if median {
			rl, rh := rows[lo][b:end], rows[hi][b:end]
			rl, rh = rl[:len(o)], rh[:len(o)]
			for i := range o {
				o[i] = float32((float64(rl[i]) + float64(rh[i])) / 2)
			}
			continue
		}
		// scale and axpy by 1, which is exact: float64(v) and s + v,
		// two lanes an instruction.
		s := acc[:len(o)]
		scale(s, rows[lo][b:end], 1)
		for _, row := range rows[lo+1 : hi+1] {
			axpy(s, row[b:end], 1)
		}
		for i, v := range s {
			o[i] = float32(v / cnt)
		}
	}
	return e.checkFinite(p, out)
}

// allFinite reports whether x holds no NaN or infinity. It looks at two
// floats a word and has no branch on the data: an all-ones exponent plus
// one carries into the float's sign bit, which the mask keeps apart from
// its neighbour's. That runs at several times a loop testing each float.
func allFinite(x []float32) bool {
	const exp2, one2, sign2 = exponentF32<<32 | exponentF32, 1<<55 | 1<<23, 1<<63 | 1<<31
	var bad uint64
	if len(x) > 0 && uintptr(unsafe.Pointer(&x[0]))%8 != 0 {
		bad, x = uint64(math.Float32bits(x[0])&exponentF32+1<<23), x[1:]
	}
	n := len(x) &^ 1
	if n > 0 {
		for _, w := range unsafe.Slice((*uint64)(unsafe.Pointer(&x[0])), n/2) {
			bad |= w&exp2 + one2
		}
	}
	for _, f := range x[n:] {
		bad |= uint64(math.Float32bits(f)&exponentF32 + 1<<23)
	}
	return bad&sign2 == 0
}

// sqrt32 is a float32 square root; the compiler makes it one SQRTSS.
func sqrt32(x float32) float32 { return float32(math.Sqrt(float64(x))) }
