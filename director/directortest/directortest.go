// Package directortest holds what the tests of the director and its
// adapters share: a settable clock, a director on a temp data dir, and job
// folders and archives to submit.
package directortest

import (
	"archive/zip"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/director"
	"github.com/fedplane/fedplane/job"
	"github.com/fedplane/fedplane/store"
	"github.com/fedplane/fedplane/tensor"
)

// Clock is a settable clock, so liveness tests need no sleeps.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a Clock at a fixed time.
func NewClock() *Clock {
	return &Clock{t: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

// Add moves the clock on by d.
func (c *Clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// Config is a director.Config for tests: a temp data dir, clock's time,
// the shapes [28 28] and [1], a 10 s health-check period.
func Config(tb testing.TB, clock *Clock) director.Config {
	tb.Helper()
	return director.Config{
		DataDir:           tb.TempDir(),
		SampleShape:       []string{"28", "28"},
		TargetShape:       []string{"1"},
		HealthCheckPeriod: 10 * time.Second,
		Now:               clock.Now,
	}
}

// New opens a director on cfg, closed when the test ends.
func New(tb testing.TB, cfg director.Config) *director.Director {
	tb.Helper()
	d, err := director.New(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("director.New: %v", err)
	}
	tb.Cleanup(func() { d.Close() })
	return d
}

// WithEnvoys opens a director on the real clock with n registered
// envoys (envoy-00000, ...), closed when the test or benchmark ends. The
// envoys are written to the store in one transaction before the director
// opens it, as if they had registered before a restart: 100,000 take a
// second, not the minutes of one registration each.
func WithEnvoys(tb testing.TB, n int) *director.Director {
	tb.Helper()
	cfg := director.Config{DataDir: tb.TempDir(), HealthCheckPeriod: 10 * time.Second}
	db, err := store.Open(context.Background(), filepath.Join(cfg.DataDir, "fedplane.db"), store.Options{})
	if err != nil {
		tb.Fatal(err)
	}
	envoys := make([]store.Envoy, n)
	for i := range envoys {
		envoys[i] = store.Envoy{Name: fmt.Sprintf("envoy-%05d", i), Description: "benchmark shard", NSamples: 1000,
			SampleShape: []string{"28", "28"}, TargetShape: []string{"1"}}
	}
	err = db.UpsertEnvoys(context.Background(), envoys)
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		tb.Fatal(err)
	}
	return New(tb, cfg)
}

// Manifest is a job.json any single envoy can run.
const Manifest = `{"name": "mnist", "min_envoys": 1, "rounds": 2, "train": {"command": ["python3", "train.py"]}}`

// JobDir writes a job folder with manifest as job.json, Model as
// model.safetensors and a train.py.
func JobDir(tb testing.TB, manifest string) string {
	tb.Helper()
	dir := tb.TempDir()
	files := map[string]string{
		job.ManifestFile: manifest,
		job.ModelFile:    string(Model(tb)),
		"train.py":       "print('hi')\n",
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	return dir
}

// Model is a small float32 model in safetensors form: w = [[1 2 3] [4 5 6]]
// and b = [0.5 -0.5].
func Model(tb testing.TB) []byte {
	tb.Helper()
	var buf bytes.Buffer
	err := tensor.WriteFloat32Safetensors(&buf,
		map[string][]float32{"w": {1, 2, 3, 4, 5, 6}, "b": {0.5, -0.5}},
		map[string][]int64{"w": {2, 3}, "b": {2}})
	if err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// Zip returns the zip bytes of a job folder, as fladmin sends them.
func Zip(tb testing.TB, dir string) []byte {
	tb.Helper()
	a, err := job.NewArchive(dir)
	if err != nil {
		tb.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := a.WriteTo(&buf); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// ZipWithManifest builds a zip holding job.json = manifest, a train.py and
// the extra name, body pairs, bypassing fladmin's own check, as a hostile
// or older client would.
func ZipWithManifest(tb testing.TB, manifest string, extra ...string) []byte {
	tb.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	files := map[string]string{job.ManifestFile: manifest, "train.py": "print(1)\n"}
	for i := 0; i+1 < len(extra); i += 2 {
		files[extra[i]] = extra[i+1]
	}
	for name, body := range files {
		w, err := zw.Create(name)
		if err != nil {
			tb.Fatal(err)
		}
		io.WriteString(w, body)
	}
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// Shard is an envoy's registration: name, a sample count and the shapes.
func Shard(name string, samples uint64, sample, target []string) *directorpb.UpdateShardInfoRequest {
	return &directorpb.UpdateShardInfoRequest{ShardInfo: &directorpb.ShardInfo{
		NodeInfo:         &directorpb.NodeInfo{Name: name},
		ShardDescription: "shard of " + name,
		NSamples:         samples,
		SampleShape:      sample,
		TargetShape:      target,
	}}
}

// Submit uploads a job archive through the admin channel.
func Submit(tb testing.TB, c *adminproto.Client, body []byte) *adminproto.Message {
	tb.Helper()
	reply, err := c.Upload(context.Background(), adminproto.NewRequest(api.CmdSubmitJob), uint64(len(body)), bytes.NewReader(body))
	if err != nil {
		tb.Fatalf("upload: %v", err)
	}
	return reply
}

// Do sends a text command through the admin channel.
func Do(tb testing.TB, c *adminproto.Client, command string) *adminproto.Message {
	tb.Helper()
	reply, err := c.Do(context.Background(), adminproto.NewRequest(command))
	if err != nil {
		tb.Fatalf("%s: %v", command, err)
	}
	return reply
}
