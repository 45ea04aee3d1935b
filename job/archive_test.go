package job_test

import (
	"archive/zip"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/fedplane/fedplane/job"
)

// jobFolder returns the files of a typical job folder: a model that does
// not compress, code that does, an executable, a subfolder, an empty file
// and an empty folder.
func jobFolder() map[string]file {
	code := strings.Repeat("import numpy as np\nprint('training one round')\n", 2000)
	return map[string]file{
		"job.json":          {body: []byte(minimalManifest)},
		"model.safetensors": {body: randomBytes(300<<10, 1)},
		"train.py":          {body: []byte(code)},
		"run.sh":            {body: []byte("#!/bin/sh\nexec python3 train.py \"$@\"\n"), mode: 0o755},
		"data/part-1.csv":   {body: bytes.Repeat([]byte("1,2,3,4,5,6,7,8,9\n"), 10000)},
		"empty.txt":         {},
		"empty/":            {},
	}
}

func mustNewArchive(tb testing.TB, dir string) *job.Archive {
	tb.Helper()
	a, err := job.NewArchive(dir)
	if err != nil {
		tb.Fatalf("NewArchive: %v", err)
	}
	return a
}

func TestArchiveRoundTrip(t *testing.T) {
	src := mustFolder(t, jobFolder())
	a := mustNewArchive(t, src)

	var buf bytes.Buffer
	n, err := a.WriteTo(&buf)
	if err != nil {
		t.Fatalf("WriteTo: %v", err)
	}
	if n != a.Size() || int64(buf.Len()) != a.Size() {
		t.Fatalf("got n=%d and %d bytes, want Size()=%d", n, buf.Len(), a.Size())
	}
	if got, want := a.Files(), 6; got != want {
		t.Errorf("Files: got %d, want %d", got, want)
	}

	// A second run produces the same bytes.
	var again bytes.Buffer
	if _, err := a.WriteTo(&again); err != nil {
		t.Fatalf("second WriteTo: %v", err)
	}
	if !bytes.Equal(again.Bytes(), buf.Bytes()) {
		t.Errorf("second WriteTo produced different bytes")
	}

	zr, err := zip.NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	headers := map[string]*zip.FileHeader{}
	for _, f := range zr.File {
		names = append(names, f.Name)
		headers[f.Name] = &f.FileHeader
	}
	wantNames := []string{"data/", "data/part-1.csv", "empty/", "empty.txt", "job.json", "model.safetensors", "run.sh", "train.py"}
	if !reflect.DeepEqual(names, wantNames) {
		t.Errorf("entries: got %q, want %q", names, wantNames)
	}
	methods := []struct {
		name string
		want uint16
	}{
		{"model.safetensors", zip.Store},
		{"train.py", zip.Deflate},
		{"data/part-1.csv", zip.Deflate},
		{"empty.txt", zip.Store},
	}
	for _, m := range methods {
		if got := headers[m.name].Method; got != m.want {
			t.Errorf("%s: method got %d, want %d", m.name, got, m.want)
		}
	}
	if got, want := headers["run.sh"].Mode().Perm(), fs.FileMode(0o755); got != want {
		t.Errorf("run.sh: mode got %v, want %v", got, want)
	}

	info, err := job.Inspect(bytes.NewReader(buf.Bytes()), int64(buf.Len()), job.DefaultLimits())
	if err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	if info.Root != "" || info.Files != a.Files() {
		t.Errorf("Inspect: got root %q and %d files, want \"\" and %d", info.Root, info.Files, a.Files())
	}
	if !reflect.DeepEqual(info.Manifest, a.Manifest()) {
		t.Errorf("Inspect: got manifest %+v, want %+v", info.Manifest, a.Manifest())
	}
	var wantUnpacked int64
	for _, f := range jobFolder() {
		wantUnpacked += int64(len(f.body))
	}
	if info.Unpacked != wantUnpacked {
		t.Errorf("Unpacked: got %d, want %d", info.Unpacked, wantUnpacked)
	}

	dst := filepath.Join(t.TempDir(), "job")
	if _, err := job.Unpack(bytes.NewReader(buf.Bytes()), int64(buf.Len()), dst, job.Limits{}); err != nil {
		t.Fatalf("Unpack: %v", err)
	}
	if got, want := mustTree(t, dst), mustTree(t, src); !reflect.DeepEqual(got, want) {
		t.Errorf("unpacked tree differs:\ngot  %v\nwant %v", summary(got), summary(want))
	}
}

// summary lists a tree without its contents, for readable failures.
func summary(tree map[string]treeEntry) map[string]string {
	s := map[string]string{}
	for name, e := range tree {
		s[name] = fmt.Sprintf("%v %d bytes", e.perm, len(e.body))
	}
	return s
}

func TestNewArchiveRefuses(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]file
		setup func(t *testing.T, dir string)
		want  string
	}{
		{
			name:  "symbolic link",
			files: jobFolder(),
			setup: func(t *testing.T, dir string) {
				if err := os.Symlink("../model.safetensors", filepath.Join(dir, "data", "link")); err != nil {
					t.Skipf("cannot make a symbolic link: %v", err)
				}
			},
			want: `job folder: "data/link" is a symbolic link; copy the file instead`,
		},
		{
			name:  "no job.json",
			files: map[string]file{"train.py": {body: []byte("print(1)")}},
			want:  "job folder: no job.json in ",
		},
		{
			name:  "job.json is a folder",
			files: map[string]file{"job.json/": {}},
			want:  "job.json is not a regular file",
		},
		{
			name:  "bad job.json",
			files: map[string]file{"job.json": {body: []byte(`{"name":"x","min_envoys":1,"rounds":0,"train":{"command":["a"]}}`)}},
			want:  `job.json: "rounds" must be at least 1, got 0`,
		},
	}
	if runtime.GOOS != "windows" {
		tests = append(tests, struct {
			name  string
			files map[string]file
			setup func(t *testing.T, dir string)
			want  string
		}{
			name:  "backslash in a name",
			files: map[string]file{"job.json": {body: []byte(minimalManifest)}, `a\b`: {}},
			want:  `job folder: "a\\b" cannot be sent: its name contains a backslash`,
		})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := mustFolder(t, tt.files)
			if tt.setup != nil {
				tt.setup(t, dir)
			}
			a, err := job.NewArchive(dir)
			if err == nil {
				t.Fatalf("got an archive of %d bytes, want error containing %q", a.Size(), tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %q, want it to contain %q", err, tt.want)
			}
			if !errors.Is(err, job.ErrInvalid) {
				t.Errorf("errors.Is(%v, ErrInvalid) = false, want true", err)
			}
		})
	}
}

func TestNewArchiveBadManifestNamesPath(t *testing.T) {
	dir := mustFolder(t, map[string]file{"job.json": {body: []byte(`{"name":"x"}`)}})
	_, err := job.NewArchive(dir)
	want := filepath.Join(dir, "job.json") + `: neither "envoys" nor "min_envoys" is set`
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("got %v, want it to start with %q", err, want)
	}
}

func TestNewArchiveNotAFolder(t *testing.T) {
	dir := mustFolder(t, map[string]file{"job.json": {body: []byte(minimalManifest)}})
	if _, err := job.NewArchive(filepath.Join(dir, "job.json")); err == nil || !strings.Contains(err.Error(), "is not a folder") {
		t.Errorf("got %v, want an error saying it is not a folder", err)
	}
	if _, err := job.NewArchive(filepath.Join(dir, "missing")); err == nil || errors.Is(err, job.ErrInvalid) {
		t.Errorf("got %v, want a plain I/O error", err)
	}
}

func TestArchiveChanged(t *testing.T) {
	later := time.Now().Add(time.Hour)
	tests := []struct {
		name   string
		change func(t *testing.T, dir string)
		want   string
	}{
		{
			name: "stored file grew",
			change: func(t *testing.T, dir string) {
				f, err := os.OpenFile(filepath.Join(dir, "model.safetensors"), os.O_APPEND|os.O_WRONLY, 0)
				if err != nil {
					t.Fatal(err)
				}
				f.Write([]byte{1})
				f.Close()
			},
			want: `job folder changed while it was being sent: "model.safetensors" was 307200 bytes and is now 307201`,
		},
		{
			name: "file removed",
			change: func(t *testing.T, dir string) {
				if err := os.Remove(filepath.Join(dir, "train.py")); err != nil {
					t.Fatal(err)
				}
			},
			want: `job folder changed while it was being sent: "train.py" was removed`,
		},
		{
			name: "same size, rewritten",
			change: func(t *testing.T, dir string) {
				rewrite(t, filepath.Join(dir, "model.safetensors"), randomBytes(300<<10, 2), later)
			},
			want: `job folder changed while it was being sent: "model.safetensors" was modified`,
		},
		{
			name: "same size and time, content compresses differently",
			change: func(t *testing.T, dir string) {
				path := filepath.Join(dir, "data", "part-1.csv")
				fi, err := os.Stat(path)
				if err != nil {
					t.Fatal(err)
				}
				rewrite(t, path, randomBytes(int(fi.Size()), 3), fi.ModTime())
			},
			want: `job folder changed while it was being sent: "data/part-1.csv": its compressed size differs`,
		},
		{
			name: "last file compresses differently",
			change: func(t *testing.T, dir string) {
				path := filepath.Join(dir, "train.py")
				fi, err := os.Stat(path)
				if err != nil {
					t.Fatal(err)
				}
				rewrite(t, path, randomBytes(int(fi.Size()), 4), fi.ModTime())
			},
			want: `job folder changed while it was being sent: "train.py": the archive grew past the`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := mustFolder(t, jobFolder())
			a := mustNewArchive(t, dir)
			tt.change(t, dir)
			var buf bytes.Buffer
			n, err := a.WriteTo(&buf)
			if err == nil {
				t.Fatalf("WriteTo wrote %d bytes, want error containing %q", n, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %q, want it to contain %q", err, tt.want)
			}
			if n != int64(buf.Len()) || n > a.Size() {
				t.Errorf("got n=%d and %d bytes written, want them equal and at most Size()=%d", n, buf.Len(), a.Size())
			}
		})
	}
}

// rewrite replaces path's content in place and sets its modification time.
func rewrite(t *testing.T, path string, body []byte, mtime time.Time) {
	t.Helper()
	if err := os.WriteFile(path, body, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

// failWriter fails after n bytes.
type failWriter struct{ n int }

var errBroken = errors.New("connection broken")

func (w *failWriter) Write(p []byte) (int, error) {
	if len(p) > w.n {
		return 0, errBroken
	}
	w.n -= len(p)
	return len(p), nil
}

func TestArchiveWriteToPassesWriterErrors(t *testing.T) {
	a := mustNewArchive(t, mustFolder(t, jobFolder()))
	_, err := a.WriteTo(&failWriter{n: 1000})
	if !errors.Is(err, errBroken) || errors.Is(err, job.ErrInvalid) {
		t.Errorf("got %v, want %v and not ErrInvalid", err, errBroken)
	}
}

func BenchmarkArchiveWriteTo(b *testing.B) {
	const size = 64 << 20
	dir := mustFolder(b, map[string]file{
		"job.json":          {body: []byte(minimalManifest)},
		"model.safetensors": {body: randomBytes(size, 7)},
	})
	b.Run("WriteTo", func(b *testing.B) {
		a := mustNewArchive(b, dir)
		b.SetBytes(size)
		b.ResetTimer()
		for b.Loop() {
			if _, err := a.WriteTo(io.Discard); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("NewArchive", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			mustNewArchive(b, dir)
		}
	})
	b.Run("io.CopyBuffer", func(b *testing.B) {
		// The same 256 KiB buffer as WriteTo, so the difference is the
		// zip framing and the CRC.
		buf := make([]byte, 256<<10)
		b.SetBytes(size)
		for b.Loop() {
			f, err := os.Open(filepath.Join(dir, "model.safetensors"))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.CopyBuffer(struct{ io.Writer }{io.Discard}, struct{ io.Reader }{f}, buf); err != nil {
				b.Fatal(err)
			}
			f.Close()
		}
	})
	b.Run("io.Copy", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			f, err := os.Open(filepath.Join(dir, "model.safetensors"))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, f); err != nil {
				b.Fatal(err)
			}
			f.Close()
		}
	})
}
