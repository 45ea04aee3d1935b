package tensor

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// mustOnDisk writes x to a file in dir, as safetensors or, with results
// set, as a TaskResults (whose tensors start at offsets that are not
// multiples of 4), and returns the file's Index, which reads the open file.
func mustOnDisk(tb testing.TB, dir, name string, x *Index, results bool) *Index {
	tb.Helper()
	var buf bytes.Buffer
	if results {
		if _, err := WriteTaskResults(&buf, TaskResultsHeader{Sender: "envoy", TaskName: "train", Round: 1, DataSize: 1}, x, nil); err != nil {
			tb.Fatal(err)
		}
	} else {
		sw, err := NewSafetensorsWriter(&buf, x.Tensors, nil)
		if err != nil {
			tb.Fatal(err)
		}
		for _, s := range x.Tensors {
			if _, err := sw.Write(sectionBytes(tb, x, s)); err != nil {
				tb.Fatal(err)
			}
		}
		if err := sw.Close(); err != nil {
			tb.Fatal(err)
		}
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		tb.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { f.Close() })
	if results {
		tr, err := ReadTaskResults(f, int64(buf.Len()))
		if err != nil {
			tb.Fatal(err)
		}
		for i, s := range x.Tensors {
			tr.Model.Tensors[i].Delta = s.Delta
		}
		return tr.Model
	}
	out, _, err := ReadSafetensors(f, int64(buf.Len()))
	if err != nil {
		tb.Fatal(err)
	}
	return out
}

// TestAggregateFromFiles checks that every aggregator writes the same
// bytes from files, which it maps where it can, as from memory, which it
// reads: inputs in safetensors files (aligned, mapped and read in place),
// a TaskResults file (unaligned: copied out of the mapping) and a delta.
func TestAggregateFromFiles(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	x := randomModel(r, nil, 1)
	mem := []Input{}
	for k := range 5 {
		mem = append(mem, Input{X: randomModel(r, x, 0.1).index(t), Weight: float64(k + 1)})
	}
	delta := randomModel(r, nil, 0.01).index(t)
	for i := range delta.Tensors {
		delta.Tensors[i].Delta = true
	}
	mem = append(mem, Input{X: delta, Weight: 2})
	model := x.index(t)
	dir := t.TempDir()
	disk := make([]Input, len(mem))
	for k, in := range mem {
		disk[k] = Input{X: mustOnDisk(t, dir, "in"+string(rune('0'+k)), in.X, k%2 == 1), Weight: in.Weight}
	}
	diskModel := mustOnDisk(t, dir, "model", model, false)
	if canMmap {
		ms := mapIndexes(diskModel, disk[0].X)
		if ms.of(diskModel.R) == nil || ms.of(disk[0].X.R) == nil {
			t.Fatal("the files were not mapped")
		}
		ms.close()
	}
	for _, a := range []Aggregator{
		{Name: AggFedAvg},
		{Name: AggFedAvg, ClipNorm: 0.3},
		{Name: AggFedAvgM, Eta: 1, Momentum: 0.9},
		{Name: AggFedAdam, Eta: 0.1, Beta1: 0.9, Beta2: 0.99, Tau: 1e-3},
		{Name: AggFedYogi, Eta: 0.01, Beta1: 0.9, Beta2: 0.99, Tau: 1e-3},
		{Name: AggFedAdagrad, Eta: 0.1, Beta1: 0.5, Tau: 1e-3},
		{Name: AggMedian},
		{Name: AggTrimmedMean, Trim: 0.2},
	} {
		name := a.Name
		if a.ClipNorm > 0 {
			name += " clipped"
		}
		t.Run(name, func(t *testing.T) {
			for _, chunk := range []int{7, 64} {
				run := func(model *Index, in []Input, state *Index) ([]byte, []byte) {
					var out, st bytes.Buffer
					if err := aggregate(&out, model, in, a, State{Step: 2, In: state, Out: &st}, chunk); err != nil {
						t.Fatal(err)
					}
					return out.Bytes(), st.Bytes()
				}
				// A first step's state, in memory and on disk.
				_, st1 := run(model, mem, nil)
				var memState, diskState *Index
				if len(st1) > 0 {
					var err error
					if memState, _, err = ReadSafetensors(bytes.NewReader(st1), int64(len(st1))); err != nil {
						t.Fatal(err)
					}
					diskState = mustOnDisk(t, dir, a.Name+".state", memState, false)
				}
				wantOut, wantSt := run(model, mem, memState)
				gotOut, gotSt := run(diskModel, disk, diskState)
				if !bytes.Equal(gotOut, wantOut) || !bytes.Equal(gotSt, wantSt) {
					t.Fatalf("chunk %d: the files gave other bytes than memory", chunk)
				}
			}
		})
	}
	var want, got bytes.Buffer
	if err := FedAvg(&want, model, mem); err != nil {
		t.Fatal(err)
	}
	if err := FedAvg(&got, diskModel, disk); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Fatal("FedAvg: the files gave other bytes than memory")
	}
}

// TestAggregateTruncatedFile truncates an input file before an aggregation
// and, where files are mapped, while it runs: either way every aggregator
// returns an error naming the input or its file, and nothing crashes.
func TestAggregateTruncatedFile(t *testing.T) {
	aggs := []Aggregator{
		{Name: AggFedAvg},
		{Name: AggFedAvg, ClipNorm: 0.3},
		{Name: AggFedAdam, Eta: 0.1, Beta1: 0.9, Beta2: 0.99, Tau: 1e-3},
		{Name: AggMedian},
		{Name: AggTrimmedMean, Trim: 0.2},
	}
	for _, when := range []string{"before", "while running"} {
		for _, a := range aggs {
			name := a.Name
			if a.ClipNorm > 0 {
				name += " clipped"
			}
			t.Run(when+"/"+name, func(t *testing.T) {
				dir := t.TempDir()
				var in []Input
				var paths []string
				for k := range 3 {
					path := filepath.Join(dir, "in"+string(rune('0'+k))+".safetensors")
					mustWriteModelFile(t, path, 1<<18, float32(k)) // 1 MiB: many pages, many chunks
					x, f, err := OpenSafetensors(path)
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { f.Close() })
					in = append(in, Input{X: x, Weight: 1})
					paths = append(paths, path)
				}
				truncate := func() {
					if err := os.Truncate(paths[1], 4096); err != nil {
						t.Fatal(err)
					}
				}
				if when == "before" {
					truncate()
				} else {
					if !canMmap {
						t.Skip("files are not mapped on this OS")
					}
					testHookMapped = truncate
					defer func() { testHookMapped = nil }()
				}
				var st bytes.Buffer
				err := Aggregate(&bytes.Buffer{}, in[0].X, in, a, State{Step: 1, Out: &st})
				if err == nil {
					t.Fatal("got no error from a truncated input")
				}
				wantErr := "input 1: "
				if when != "before" {
					wantErr = paths[1]
					if !errors.Is(err, errFault) {
						t.Fatalf("got %v, want a read fault", err)
					}
				}
				if !strings.Contains(err.Error(), wantErr) {
					t.Fatalf("got %v, want it to name %q", err, wantErr)
				}
			})
		}
	}
}
