package job_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/fedplane/fedplane/job"
)

// limitedWriter takes at most n bytes, then fails, as a full disk does.
type limitedWriter struct {
	buf bytes.Buffer
	n   int
}

var errFull = errors.New("no space left on device")

func (w *limitedWriter) Write(p []byte) (int, error) {
	if len(p) > w.n {
		k := w.n
		w.buf.Write(p[:k])
		w.n = 0
		return k, errFull
	}
	w.n -= len(p)
	return w.buf.Write(p)
}

func TestHashWriter(t *testing.T) {
	const buf = 256 << 10 // job.hashBufSize
	tests := []struct {
		name   string
		size   int
		chunks []int // write sizes, cycled; nil writes all at once
	}{
		{"nothing", 0, nil},
		{"one byte", 1, nil},
		{"one buffer", buf, nil},
		{"one buffer and a byte", buf + 1, nil},
		{"all buffers in one write", 4*buf + 7, nil},
		{"many more than the buffers", 3<<20 + 5, nil},
		{"small writes", 1<<20 + 3, []int{1, 7, 4096, 100}},
		{"writes across buffers", 2<<20 + 11, []int{buf - 1, buf + 1, 3}},
		{"copy-sized writes", 5 << 20, []int{256 << 10}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := randomBytes(tt.size, uint64(tt.size))
			var out bytes.Buffer
			hw := job.NewHashWriter(&out)
			for i, rest := 0, data; len(rest) > 0; i++ {
				k := len(rest)
				if tt.chunks != nil {
					k = min(k, tt.chunks[i%len(tt.chunks)])
				}
				n, err := hw.Write(rest[:k])
				if err != nil || n != k {
					t.Fatalf("Write(%d bytes): got %d, %v", k, n, err)
				}
				rest = rest[k:]
			}
			want := sha256.Sum256(data)
			if err := hw.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if got := hw.Sum(); got != hex.EncodeToString(want[:]) {
				t.Errorf("Sum: got %s, want %x", got, want)
			}
			if err := hw.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			if got := hw.Sum(); got != hex.EncodeToString(want[:]) {
				t.Errorf("Sum after a second Close: got %s, want %x", got, want)
			}
			if !bytes.Equal(out.Bytes(), data) {
				t.Errorf("underlying writer: got %d bytes, want the %d written", out.Len(), tt.size)
			}
		})
	}
}

// TestHashWriterShortWrite: after a failed write the hash describes exactly
// what the underlying writer took, and Close still returns.
func TestHashWriterShortWrite(t *testing.T) {
	data := randomBytes(1<<20, 1)
	w := &limitedWriter{n: 300_000}
	hw := job.NewHashWriter(w)
	_, err := io.Copy(hw, bytes.NewReader(data))
	if !errors.Is(err, errFull) {
		t.Fatalf("io.Copy: got %v, want %v", err, errFull)
	}
	want := sha256.Sum256(data[:300_000])
	hw.Close()
	if got := hw.Sum(); got != hex.EncodeToString(want[:]) {
		t.Errorf("Sum: got %s, want the sha256 of the 300000 bytes written, %x", got, want)
	}
	if w.buf.Len() != 300_000 {
		t.Errorf("underlying writer: got %d bytes, want 300000", w.buf.Len())
	}
}

// BenchmarkHashWriter hashes and writes 64 MiB into a file in the 256 KiB
// writes a body copy makes, against hashing in line (io.MultiWriter, as the
// director did): with a core to spare, the file write overlaps the hash.
func BenchmarkHashWriter(b *testing.B) {
	data := randomBytes(64<<20, 2)
	f, err := os.Create(filepath.Join(b.TempDir(), "out"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	const chunk = 256 << 10
	run := func(b *testing.B, w func() (io.Writer, func())) {
		b.SetBytes(int64(len(data)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := f.Seek(0, io.SeekStart); err != nil {
				b.Fatal(err)
			}
			hw, sum := w()
			for p := data; len(p) > 0; p = p[chunk:] {
				if _, err := hw.Write(p[:chunk]); err != nil {
					b.Fatal(err)
				}
			}
			sum()
		}
	}
	b.Run("pipelined", func(b *testing.B) {
		run(b, func() (io.Writer, func()) {
			hw := job.NewHashWriter(f)
			return hw, func() { hw.Close() }
		})
	})
	b.Run("inline", func(b *testing.B) {
		run(b, func() (io.Writer, func()) {
			h := sha256.New()
			return io.MultiWriter(f, h), func() { h.Sum(nil) }
		})
	})
}

// TestHashWriterSumBeforeClose: Sum before Close is a mistake that panics
// rather than returning a hash of part of what was written.
func TestHashWriterSumBeforeClose(t *testing.T) {
	hw := job.NewHashWriter(io.Discard)
	defer hw.Close()
	defer func() {
		if recover() == nil {
			t.Error("Sum before Close: got no panic")
		}
	}()
	hw.Sum()
}
