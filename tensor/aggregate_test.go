package tensor

import (
	"bytes"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// refModel is a model as the reference sees it: tensor name -> values.
type refModel map[string][]float64

// refState is the reference's server state: vector name -> tensor -> values,
// each value rounded to float32 as the state file stores it.
type refState map[string]refModel

// aggLayout is the layout of the test models: tensors of uneven sizes, so
// chunks straddle tensor ends.
var aggLayout = map[string]int{"a.weight": 37, "b.bias": 5, "c.weight": 64}

func randomModel(r *rand.Rand, center refModel, spread float64) refModel {
	m := refModel{}
	for name, n := range aggLayout {
		v := make([]float64, n)
		for i := range v {
			c := 0.0
			if center != nil {
				c = center[name][i]
			}
			v[i] = float64(float32(c + spread*(2*r.Float64()-1)))
		}
		m[name] = v
	}
	return m
}

func (m refModel) index(tb testing.TB) *Index {
	tb.Helper()
	t := map[string][]float32{}
	for name, v := range m {
		f := make([]float32, len(v))
		for i, x := range v {
			f[i] = float32(x)
		}
		t[name] = f
	}
	return mustFloat32Index(tb, t, nil)
}

// reference computes, element by element in float64, the step of a from
// model x and the inputs, returning the next model and state. It shares no
// code with Aggregate: Δ is Σ w_i·c_i·(x_i − x) / Σ w_i, the order
// statistics come from sorting each coordinate's values.
func reference(a Aggregator, step int, x refModel, inputs []refModel, weights []float64, st refState) (refModel, refState) {
	n := len(inputs)
	clip := make([]float64, n)
	for k, in := range inputs {
		clip[k] = 1
		if a.ClipNorm > 0 {
			var sq float64
			for name, v := range in {
				for i := range v {
					d := v[i] - x[name][i]
					sq += d * d
				}
			}
			if norm := math.Sqrt(sq); norm > a.ClipNorm {
				clip[k] = a.ClipNorm / norm
			}
		}
	}
	var wsum float64
	for _, w := range weights {
		wsum += w
	}
	f32 := func(v float64) float64 { return float64(float32(v)) }
	out, next := refModel{}, refState{"m": {}, "v": {}}
	for name, xs := range x {
		o := make([]float64, len(xs))
		nm, nv := make([]float64, len(xs)), make([]float64, len(xs))
		for i, xv := range xs {
			vals := make([]float64, n)
			var delta float64
			for k, in := range inputs {
				d := clip[k] * (in[name][i] - xv)
				vals[k] = xv + d
				delta += weights[k] * d / wsum
			}
			m, v := 0.0, 0.0
			if sm := st["m"][name]; sm != nil {
				m = sm[i]
			}
			if sv := st["v"][name]; sv != nil {
				v = sv[i]
			}
			switch a.Name {
			case AggFedAvg:
				o[i] = xv + delta
			case AggFedAvgM:
				v = a.Momentum*v + delta
				o[i] = xv + a.Eta*v
			case AggFedAdagrad:
				m = a.Beta1*m + (1-a.Beta1)*delta
				v += delta * delta
				o[i] = xv + a.Eta*m/(math.Sqrt(v)+a.Tau)
			case AggFedAdam:
				m = a.Beta1*m + (1-a.Beta1)*delta
				v = a.Beta2*v + (1-a.Beta2)*delta*delta
				t := float64(step)
				eta := a.Eta * math.Sqrt(1-math.Pow(a.Beta2, t)) / (1 - math.Pow(a.Beta1, t))
				o[i] = xv + eta*m/(math.Sqrt(v)+a.Tau)
			case AggFedYogi:
				m = a.Beta1*m + (1-a.Beta1)*delta
				d2 := delta * delta
				sign := 0.0
				if v > d2 {
					sign = 1
				} else if v < d2 {
					sign = -1
				}
				v -= (1 - a.Beta2) * d2 * sign
				o[i] = xv + a.Eta*m/(math.Sqrt(v)+a.Tau)
			case AggMedian:
				for k := range vals {
					vals[k] = f32(vals[k]) // a clipped input is a float32 model too
				}
				slices.Sort(vals)
				o[i] = (vals[(n-1)/2] + vals[n/2]) / 2
			case AggTrimmedMean:
				for k := range vals {
					vals[k] = f32(vals[k])
				}
				slices.Sort(vals)
				cut := int(math.Floor(a.Trim * float64(n)))
				var s float64
				for _, v := range vals[cut : n-cut] {
					s += v
				}
				o[i] = s / float64(n-2*cut)
			}
			nm[i], nv[i] = f32(m), f32(v)
		}
		out[name] = o
		next["m"][name], next["v"][name] = nm, nv
	}
	return out, next
}

// aggregateOnce runs aggregate and returns the model and the state file.
func aggregateOnce(t *testing.T, a Aggregator, step int, x *Index, inputs []Input, state *Index, chunk int) (*Index, *Index) {
	t.Helper()
	var out, stOut bytes.Buffer
	if err := aggregate(&out, x, inputs, a, State{Step: step, In: state, Out: &stOut}, chunk); err != nil {
		t.Fatal(err)
	}
	m, _, err := ReadSafetensors(bytes.NewReader(out.Bytes()), int64(out.Len()))
	if err != nil {
		t.Fatal(err)
	}
	if err := SameLayout(m, x); err != nil {
		t.Fatal(err)
	}
	if len(a.StateVectors()) == 0 {
		if stOut.Len() != 0 {
			t.Fatalf("%s wrote %d bytes of state", a.Name, stOut.Len())
		}
		return m, nil
	}
	s, meta, err := ReadSafetensors(bytes.NewReader(stOut.Bytes()), int64(stOut.Len()))
	if err != nil {
		t.Fatal(err)
	}
	if meta[stateMetaAggregator] != a.Name || meta[stateMetaStep] != strconv.Itoa(step) {
		t.Fatalf("state metadata %v", meta)
	}
	return m, s
}

// close reports whether got, a float32 result, is the float64 want up to
// float32 rounding (a few ulps).
func closeTo(got float32, want float64) bool {
	return math.Abs(float64(got)-want) <= 1e-6*math.Max(1, math.Abs(want))
}

func TestAggregateMatchesReference(t *testing.T) {
	adam := Aggregator{Name: AggFedAdam, Eta: 0.1, Beta1: 0.9, Beta2: 0.99, Tau: 1e-3}
	tests := []struct {
		name string
		a    Aggregator
		n    int
	}{
		{"fedavg clipped", Aggregator{Name: AggFedAvg, ClipNorm: 0.5}, 4},
		{"fedavgm", Aggregator{Name: AggFedAvgM, Eta: 1, Momentum: 0.9}, 3},
		{"fedavgm lr", Aggregator{Name: AggFedAvgM, Eta: 0.5, Momentum: 0.5}, 5},
		{"fedadam", adam, 4},
		{"fedadam clipped", Aggregator{Name: AggFedAdam, Eta: 0.1, Beta1: 0.9, Beta2: 0.99, Tau: 1e-3, ClipNorm: 0.3}, 4},
		{"fedyogi", Aggregator{Name: AggFedYogi, Eta: 0.01, Beta1: 0.9, Beta2: 0.99, Tau: 1e-3}, 3},
		{"fedadagrad", Aggregator{Name: AggFedAdagrad, Eta: 0.1, Tau: 1e-3}, 3},
		{"fedadagrad momentum", Aggregator{Name: AggFedAdagrad, Eta: 0.1, Beta1: 0.5, Tau: 1e-3}, 3},
		{"median odd", Aggregator{Name: AggMedian}, 5},
		{"median even", Aggregator{Name: AggMedian}, 10},
		{"median of one", Aggregator{Name: AggMedian}, 1},
		{"median of two", Aggregator{Name: AggMedian}, 2},
		{"median clipped", Aggregator{Name: AggMedian, ClipNorm: 0.4}, 7},
		{"trimmed 0.2 of 10", Aggregator{Name: AggTrimmedMean, Trim: 0.2}, 10},
		{"trimmed 0 is the plain mean", Aggregator{Name: AggTrimmedMean, Trim: 0}, 4},
		{"trimmed cut rounds down", Aggregator{Name: AggTrimmedMean, Trim: 0.19}, 5},
		{"trimmed to the middle two", Aggregator{Name: AggTrimmedMean, Trim: 0.49}, 10},
		{"trimmed to the middle one", Aggregator{Name: AggTrimmedMean, Trim: 0.45}, 9},
		{"trimmed clipped", Aggregator{Name: AggTrimmedMean, Trim: 0.25, ClipNorm: 0.5}, 8},
	}
	for _, tt := range tests {
		for _, chunk := range []int{1, 7, 64} {
			t.Run(tt.name+"/chunk="+strconv.Itoa(chunk), func(t *testing.T) {
				r := rand.New(rand.NewPCG(uint64(tt.n), uint64(chunk)))
				x := randomModel(r, nil, 1)
				var st refState
				var stIdx *Index
				for step := 1; step <= 3; step++ {
					inputs := make([]refModel, tt.n)
					weights := make([]float64, tt.n)
					in := make([]Input, tt.n)
					for k := range inputs {
						inputs[k] = randomModel(r, x, 0.1*float64(k+1))
						weights[k] = float64(1 + r.IntN(100))
						in[k] = Input{X: inputs[k].index(t), Weight: weights[k]}
					}
					want, wantSt := reference(tt.a, step, x, inputs, weights, st)
					got, gotSt := aggregateOnce(t, tt.a, step, x.index(t), in, stIdx, chunk)
					for name, w := range want {
						g, err := got.Float32s(name)
						if err != nil {
							t.Fatal(err)
						}
						for i := range w {
							if !closeTo(g[i], w[i]) {
								t.Fatalf("step %d: %s[%d] = %v, want %v", step, name, i, g[i], w[i])
							}
						}
					}
					vecs := tt.a.StateVectors()
					for name := range want {
						if len(vecs) == 0 {
							break
						}
						g, err := gotSt.Float32s(name)
						if err != nil {
							t.Fatal(err)
						}
						for i := range want[name] {
							for k, vec := range vecs {
								if w := wantSt[vec][name][i]; !closeTo(g[i*len(vecs)+k], w) {
									t.Fatalf("step %d: state %s of %s[%d] = %v, want %v", step, vec, name, i, g[i*len(vecs)+k], w)
								}
							}
						}
					}
					// The next step starts from what was written, as the
					// director does after a restart.
					x = refModel{}
					for name := range want {
						g, _ := got.Float32s(name)
						v := make([]float64, len(g))
						for i, f := range g {
							v[i] = float64(f)
						}
						x[name] = v
					}
					if len(vecs) > 0 {
						st, stIdx = refState{"m": {}, "v": {}}, gotSt
						for name := range want {
							g, _ := gotSt.Float32s(name)
							for k, vec := range vecs {
								v := make([]float64, len(want[name]))
								for i := range v {
									v[i] = float64(g[i*len(vecs)+k])
								}
								st[vec][name] = v
							}
						}
					}
				}
			})
		}
	}
}

func TestAggregateFedAvgIsFedAvg(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	x := randomModel(r, nil, 1)
	var in []Input
	for k := range 4 {
		in = append(in, Input{X: randomModel(r, x, 0.1).index(t), Weight: float64(k + 1)})
	}
	// One input sends deltas from the model: both add the model back.
	delta := refModel{}
	for name, v := range x {
		delta[name] = make([]float64, len(v))
		for i := range v {
			delta[name][i] = float64(float32(0.01 * float64(i+1)))
		}
	}
	dx := delta.index(t)
	for i := range dx.Tensors {
		dx.Tensors[i].Delta = true
	}
	in = append(in, Input{X: dx, Weight: 2})
	var a, b bytes.Buffer
	if err := Aggregate(&a, x.index(t), in, Aggregator{Name: AggFedAvg}, State{}); err != nil {
		t.Fatal(err)
	}
	if err := FedAvg(&b, x.index(t), in); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.Bytes(), b.Bytes()) {
		t.Fatal("Aggregate(fedavg) and FedAvg wrote different bytes")
	}
}

func TestAggregateErrors(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	x := randomModel(r, nil, 1)
	in := []Input{{X: randomModel(r, x, 0.1).index(t), Weight: 1}}
	nan := randomModel(r, x, 0.1)
	nan["b.bias"][2] = math.NaN()
	adam := Aggregator{Name: AggFedAdam, Eta: 0.1, Beta1: 0.9, Beta2: 0.99, Tau: 1e-9}
	wrongState := mustFloat32Index(t, map[string][]float32{"a.weight": make([]float32, 37)}, nil)
	tests := []struct {
		name   string
		a      Aggregator
		inputs []Input
		st     State
		want   string
	}{
		{"unknown", Aggregator{Name: "krum"}, in, State{}, `unknown aggregator "krum"`},
		{"trim out of range", Aggregator{Name: AggTrimmedMean, Trim: 0.5}, in, State{}, "trim 0.5"},
		{"negative eta", Aggregator{Name: AggFedYogi, Eta: -1, Tau: 1}, in, State{Step: 1, Out: &bytes.Buffer{}}, "eta -1"},
		{"no state writer", adam, in, State{Step: 1}, "no writer"},
		{"step 0", adam, in, State{Out: &bytes.Buffer{}}, "step 0"},
		{"state of another layout", adam, in, State{Step: 2, In: wrongState, Out: &bytes.Buffer{}}, "server state"},
		{"NaN in an input", Aggregator{Name: AggMedian}, []Input{{X: nan.index(t), Weight: 1}}, State{}, `tensor "b.bias": element 2`},
		{"overflow", Aggregator{Name: AggFedAvgM, Eta: 1e300, Momentum: 0.9}, in,
			State{Step: 1, Out: &bytes.Buffer{}}, "holds finite values only"},
		{"fedadam overflow", Aggregator{Name: AggFedAdam, Eta: 1e300, Beta1: 0.9, Beta2: 0.99, Tau: 1e-9}, in,
			State{Step: 1, Out: &bytes.Buffer{}}, "holds finite values only"},
		{"NaN in an input, fedadam", adam, []Input{{X: nan.index(t), Weight: 1}}, State{Step: 1, Out: &bytes.Buffer{}}, `tensor "b.bias": element 2`},
		{"NaN in an input, fedavg", Aggregator{Name: AggFedAvg}, []Input{{X: nan.index(t), Weight: 1}}, State{}, `tensor "b.bias": element 2`},
		{"negative clip", Aggregator{Name: AggFedAvg, ClipNorm: -1}, in, State{}, "clip_norm -1"},
		{"no inputs", Aggregator{Name: AggMedian}, nil, State{}, "no inputs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			err := Aggregate(&out, x.index(t), tt.inputs, tt.a, tt.st)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an error with %q", err, tt.want)
			}
		})
	}
}

func TestSelectionNetworkSorts(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for n := 1; n <= 33; n++ {
		full := selectionNetwork(n, 0, n-1)
		med := selectionNetwork(n, (n-1)/2, n/2)
		if len(med) > len(full) {
			t.Fatalf("n=%d: median network of %d longer than the sort's %d", n, len(med), len(full))
		}
		for trial := range 50 {
			vals := make([]float32, n)
			for i := range vals {
				vals[i] = float32(r.NormFloat64())
				if trial%5 == 0 {
					vals[i] = float32(r.IntN(3) - 1) // ties, and -0 vs +0 below
				}
			}
			if trial%7 == 0 {
				vals[0] = float32(math.Copysign(0, -1))
			}
			want := slices.Clone(vals)
			slices.Sort(want)
			// Each value fills a row of 19 columns: 16 go through the
			// assembly, 3 through the Go tail.
			rows := make([][]float32, n)
			for i, v := range vals {
				rows[i] = fill(19, func(int) float32 { return v })
			}
			sortColumns(rows, full, 0, 19)
			for i := range rows {
				for c, got := range rows[i] {
					if got != want[i] {
						t.Fatalf("n=%d: row %d column %d = %v, want %v (input %v)", n, i, c, got, want[i], vals)
					}
				}
			}
			for i := range rows {
				if got := rows[i][0]; got != want[i] {
					t.Fatalf("n=%d: row %d = %v, want %v (input %v)", n, i, got, want[i], vals)
				}
			}
		}
	}
}
