package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/job"
	"github.com/fedplane/fedplane/tensor"
)

// shardMiB is the size of each random file of a job folder.
const shardMiB = 64

// manifest is the job.json fedbench writes: a job no envoy ever trains.
type manifest struct {
	Name      string   `json:"name"`
	Envoys    []string `json:"envoys,omitempty"`
	MinEnvoys int      `json:"min_envoys,omitempty"`
	Rounds    int      `json:"rounds"`
	Train     struct {
		Command []string `json:"command"`
	} `json:"train"`
}

// writeJob makes a job folder at dir with job.json and model.safetensors
// (small unless modelMiB > 0, then that many MiB of random float32s), plus
// shardsMiB MiB of random bytes in files of shardMiB MiB. Random bytes do
// not compress: fladmin stores them, and the bytes on the wire are the
// bytes on disk. It returns the folder's files.
func writeJob(dir string, m manifest, modelMiB, shardsMiB int, seed byte) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	m.Rounds = 1
	m.Train.Command = []string{"true"}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, job.ManifestFile), b, 0o644); err != nil {
		return nil, err
	}
	rng := rand.NewChaCha8([32]byte{seed})
	if err := writeModel(filepath.Join(dir, job.ModelFile), modelMiB, rng); err != nil {
		return nil, err
	}
	for i := 0; shardsMiB > 0; i++ {
		n := min(shardsMiB, shardMiB)
		if err := writeRandom(filepath.Join(dir, fmt.Sprintf("shard-%03d.bin", i)), int64(n)<<20, rng); err != nil {
			return nil, err
		}
		shardsMiB -= n
	}
	return jobFiles(dir)
}

// jobFiles lists the regular files of a job folder, in name order.
func jobFiles(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var files []string
	for _, e := range entries {
		if e.Type().IsRegular() {
			files = append(files, filepath.Join(dir, e.Name()))
		}
	}
	return files, nil
}

// sizeOf sums the sizes of files.
func sizeOf(files []string) (int64, error) {
	var n int64
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			return 0, err
		}
		n += fi.Size()
	}
	return n, nil
}

// writeRandom writes n random bytes to path.
func writeRandom(path string, n int64, rng *rand.ChaCha8) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	buf := make([]byte, 1<<20)
	for n > 0 {
		m := min(n, int64(len(buf)))
		rng.Read(buf[:m])
		if _, err := f.Write(buf[:m]); err != nil {
			f.Close()
			return err
		}
		n -= m
	}
	return f.Close()
}

// modelTensors is how many tensors a generated model is split into.
const modelTensors = 16

// writeModel writes a valid safetensors file of float32 tensors to path:
// mib MiB of random bits streamed through tensor.NewSafetensorsWriter, or
// one small tensor when mib is 0. Random bits include NaNs; the director
// checks the header and dtypes, never the values.
func writeModel(path string, mib int, rng *rand.ChaCha8) error {
	params := int64(16)
	if mib > 0 {
		params = int64(mib) << 20 / 4
	}
	var specs []tensor.Span
	per := max(params/modelTensors, 1)
	for i, left := 0, params; left > 0; i++ {
		n := min(per, left)
		if i == modelTensors-1 {
			n = left
		}
		specs = append(specs, tensor.Span{Name: fmt.Sprintf("layer%02d.weight", i), DType: tensor.F32, Shape: []int64{n}})
		left -= n
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	bw := bufio.NewWriterSize(f, 1<<20)
	sw, err := tensor.NewSafetensorsWriter(bw, specs, map[string]string{"format": "pt"})
	if err != nil {
		f.Close()
		return err
	}
	buf := make([]byte, 1<<20)
	for left := params * 4; left > 0; {
		n := min(left, int64(len(buf)))
		rng.Read(buf[:n])
		if _, err := sw.Write(buf[:n]); err != nil {
			f.Close()
			return err
		}
		left -= n
	}
	return errors.Join(sw.Close(), bw.Flush(), f.Close())
}

// submit sends a job folder with `fladmin submit-job` and returns the
// job's id and how long the command took.
func (b *bench) submit(ctx context.Context, admin, dir string) (string, time.Duration, error) {
	out, took, err := b.fladmin(ctx, admin, "-o", "json", "submit-job", "--no-progress", dir)
	if err != nil {
		return "", took, err
	}
	var r map[string]any
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		return "", took, fmt.Errorf("fladmin submit-job -o json printed %q: %w", out, err)
	}
	id, _ := r[api.MetaJobID].(string)
	if id == "" {
		return "", took, fmt.Errorf("fladmin submit-job -o json printed %q, want a %s", out, api.MetaJobID)
	}
	return id, took, nil
}
