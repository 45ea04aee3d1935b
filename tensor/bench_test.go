package tensor

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// benchParams is the model size of the FedAvg benchmarks, in float32
// parameters: 10M by default so `go test -bench` stays quick,
// FEDPLANE_BENCH_PARAMS=100000000 for a 400 MB model.
func benchParams(b *testing.B) int64 {
	b.Helper()
	if v := os.Getenv("FEDPLANE_BENCH_PARAMS"); v != "" {
		p, err := strconv.ParseInt(v, 10, 64)
		if err != nil || p <= 0 {
			b.Fatalf("FEDPLANE_BENCH_PARAMS=%q: want a positive integer", v)
		}
		return p
	}
	return 10_000_000
}

const benchInputs = 10

// BenchmarkFedAvg averages 10 models of P params, stored as safetensors
// files, into io.Discard. Bytes are the inputs read, so its MB/s compare
// with BenchmarkSumLoop's.
func BenchmarkFedAvg(b *testing.B) {
	p := benchParams(b)
	dir := b.TempDir()
	inputs := make([]Input, benchInputs)
	for k := range inputs {
		path := filepath.Join(dir, "in"+strconv.Itoa(k)+".safetensors")
		mustWriteModelFile(b, path, p, float32(k))
		x, f, err := OpenSafetensors(path)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { f.Close() })
		inputs[k] = Input{X: x, Weight: float64(k + 1)}
	}
	model := inputs[0].X
	b.SetBytes(benchInputs * p * 4)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if err := FedAvg(io.Discard, model, inputs); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSumLoop is the floor FedAvg is measured against: a plain Go loop
// summing the same 10 float32 buffers, already in memory, one after the
// other (which measured twice as fast as summing element by element across
// the buffers).
func BenchmarkSumLoop(b *testing.B) {
	p := benchParams(b)
	bufs := make([][]float32, benchInputs)
	for k := range bufs {
		bufs[k] = fill(int(p), func(int) float32 { return float32(k) })
	}
	acc := make([]float32, p)
	b.SetBytes(benchInputs * p * 4)
	b.ResetTimer()
	for b.Loop() {
		copy(acc, bufs[0])
		for _, x := range bufs[1:] {
			x = x[:len(acc)]
			for i, v := range x {
				acc[i] += v
			}
		}
	}
}

// BenchmarkReadTaskResults indexes a TaskResults of 1000 tensors of 1000
// params and 10 metrics stored in a file: the cost is per tensor, not per
// byte, since the data is never read.
func BenchmarkReadTaskResults(b *testing.B) {
	tensors := map[string][]float32{}
	for i := range 1000 {
		tensors["layer"+strconv.Itoa(i)+".weight"] = make([]float32, 1000)
	}
	model := mustFloat32Index(b, tensors, nil)
	var metrics []Metric
	for i := range 10 {
		metrics = append(metrics, Metric{Name: "metric" + strconv.Itoa(i), Value: float32(i)})
	}
	var buf bytes.Buffer
	if _, err := WriteTaskResults(&buf, TaskResultsHeader{Sender: "envoy-1", FederationUUID: "uuid", TaskName: "train", Round: 3, DataSize: 100}, model, metrics); err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(b.TempDir(), "results.pb")
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		b.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	size := int64(buf.Len())
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		tr, err := ReadTaskResults(f, size)
		if err != nil {
			b.Fatal(err)
		}
		if len(tr.Model.Tensors) != 1000 {
			b.Fatalf("got %v tensors, want 1000", len(tr.Model.Tensors))
		}
	}
}

// BenchmarkAggregate runs each aggregator over the 10 models of
// BenchmarkFedAvg, the first as the current model. The stateful ones read
// a state file as they would from the second step on, and write theirs to
// io.Discard.
func BenchmarkAggregate(b *testing.B) {
	p := benchParams(b)
	dir := b.TempDir()
	inputs := make([]Input, benchInputs)
	for k := range inputs {
		path := filepath.Join(dir, "in"+strconv.Itoa(k)+".safetensors")
		mustWriteModelFile(b, path, p, float32(k))
		x, f, err := OpenSafetensors(path)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { f.Close() })
		inputs[k] = Input{X: x, Weight: float64(k + 1)}
	}
	model := inputs[0].X
	for _, a := range []Aggregator{
		{Name: AggFedAvg},
		{Name: AggFedAvgM, Eta: 1, Momentum: 0.9},
		{Name: AggFedAdam, Eta: 0.1, Beta1: 0.9, Beta2: 0.99, Tau: 1e-9},
		{Name: AggMedian},
		{Name: AggTrimmedMean, Trim: 0.2},
		{Name: AggFedAvg, ClipNorm: 1},
	} {
		name := a.Name
		if a.ClipNorm > 0 {
			name += "-clip"
		}
		b.Run(name, func(b *testing.B) {
			var state *Index
			if len(a.StateVectors()) > 0 {
				path := filepath.Join(dir, name+".state")
				f, err := os.Create(path)
				if err != nil {
					b.Fatal(err)
				}
				if err := Aggregate(io.Discard, model, inputs, a, State{Step: 1, Out: f}); err != nil {
					b.Fatal(err)
				}
				f.Close()
				x, sf, err := OpenSafetensors(path)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { sf.Close() })
				state = x
			}
			b.SetBytes(benchInputs * p * 4)
			b.ReportAllocs()
			for b.Loop() {
				if err := Aggregate(io.Discard, model, inputs, a, State{Step: 2, In: state, Out: io.Discard}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
