package blob

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The conformance tests run against every store: files, and S3 when
// FEDPLANE_TEST_S3 names a bucket (s3://bucket/prefix, with the endpoint
// and credentials in the AWS_* environment, as .ci/s3.sh exports them).
// Without it the S3 half is skipped, except under CI=true, where it fails.

// newStore opens a fresh, empty store of one kind over dataDir.
type newStore func(tb testing.TB, dataDir string) Store

func stores(t *testing.T) map[string]newStore {
	return map[string]newStore{
		"file": func(tb testing.TB, dataDir string) Store {
			s, err := NewFile(dataDir, dataDir)
			if err != nil {
				tb.Fatal(err)
			}
			return s
		},
		"s3": func(tb testing.TB, dataDir string) Store {
			return mustS3(tb, dataDir, testPrefix(tb), 0)
		},
	}
}

// testS3 returns FEDPLANE_TEST_S3, skipping the test when it is unset
// (failing it under CI=true).
func testS3(tb testing.TB) string {
	tb.Helper()
	u := os.Getenv("FEDPLANE_TEST_S3")
	if u == "" {
		if os.Getenv("CI") == "true" {
			tb.Fatal("FEDPLANE_TEST_S3 is unset under CI=true: .ci/run starts an S3 server (.ci/s3.sh) and exports it")
		}
		tb.Skip("FEDPLANE_TEST_S3 is unset: no S3 server to test against (.ci/s3.sh starts one)")
	}
	return u
}

// testPrefix is a folder of the test bucket no other test or run uses.
func testPrefix(tb testing.TB) string {
	b := make([]byte, 6)
	rand.Read(b)
	return fmt.Sprintf("blobtest-%x", b)
}

// mustS3 opens the test bucket under FEDPLANE_TEST_S3's prefix plus sub,
// with its cache under dataDir.
func mustS3(tb testing.TB, dataDir, sub string, cacheSize int64) *S3 {
	tb.Helper()
	u := strings.TrimSuffix(testS3(tb), "/") + "/" + sub
	s, err := Open(context.Background(), u, Options{DataDir: dataDir, CacheSize: cacheSize})
	if err != nil {
		tb.Fatalf("open %s: %v", u, err)
	}
	return s.(*S3)
}

func mustPut(tb testing.TB, s Store, key string, data []byte) {
	tb.Helper()
	tmp, err := s.Create("test-*")
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := tmp.Write(data); err != nil {
		tb.Fatal(err)
	}
	if err := s.Commit(context.Background(), tmp, key); err != nil {
		tb.Fatalf("commit %s: %v", key, err)
	}
	os.Remove(tmp.Name())
}

func mustGet(tb testing.TB, s Store, key string) []byte {
	tb.Helper()
	r, err := s.Open(context.Background(), key)
	if err != nil {
		tb.Fatalf("open %s: %v", key, err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		tb.Fatal(err)
	}
	if int64(len(b)) != r.Size() {
		tb.Fatalf("%s: read %d bytes, Size says %d", key, len(b), r.Size())
	}
	return b
}

func keys(tb testing.TB, s Store, prefix string) []string {
	tb.Helper()
	var got []string
	if err := s.List(context.Background(), prefix, func(i Info) error {
		got = append(got, i.Key)
		return nil
	}); err != nil {
		tb.Fatalf("list %s: %v", prefix, err)
	}
	slices.Sort(got)
	return got
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// tmpFiles lists what dataDir's tmp/ holds.
func tmpFiles(tb testing.TB, dataDir string) []string {
	tb.Helper()
	ents, err := os.ReadDir(filepath.Join(dataDir, TmpDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		tb.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestConformance(t *testing.T) {
	ctx := context.Background()
	for kind, open := range stores(t) {
		t.Run(kind, func(t *testing.T) {
			t.Run("put and get", func(t *testing.T) {
				dir := t.TempDir()
				s := open(t, dir)
				for _, n := range []int{0, 1, 1000, 17 << 20} { // 17 MiB: past S3's multipart threshold
					key := fmt.Sprintf("experiments/x/models/round-%d.safetensors", n)
					data := randomBytes(n)
					mustPut(t, s, key, data)
					if got := mustGet(t, s, key); !bytes.Equal(got, data) {
						t.Fatalf("%s: got %d bytes back, want the %d put", key, len(got), len(data))
					}
					info, err := s.Stat(ctx, key)
					if err != nil || info.Size != int64(n) || info.Key != key {
						t.Fatalf("stat %s: got %+v, %v, want size %d", key, info, err, n)
					}
				}
				if left := tmpFiles(t, dir); len(left) > 0 {
					t.Fatalf("tmp/ holds %v after commits", left)
				}
			})
			t.Run("range reads", func(t *testing.T) {
				s := open(t, t.TempDir())
				data := randomBytes(1 << 20)
				mustPut(t, s, "a/blob", data)
				r, err := s.Open(ctx, "a/blob")
				if err != nil {
					t.Fatal(err)
				}
				defer r.Close()
				for _, tt := range []struct{ off, n int }{{0, 10}, {12345, 4096}, {len(data) - 7, 7}, {500000, 1}} {
					buf := make([]byte, tt.n)
					if _, err := r.ReadAt(buf, int64(tt.off)); err != nil {
						t.Fatalf("ReadAt(%d, %d): %v", tt.off, tt.n, err)
					}
					if !bytes.Equal(buf, data[tt.off:tt.off+tt.n]) {
						t.Fatalf("ReadAt(%d, %d): got other bytes", tt.off, tt.n)
					}
				}
				if _, err := r.ReadAt(make([]byte, 8), int64(len(data))); !errors.Is(err, io.EOF) {
					t.Fatalf("ReadAt past the end: got %v, want EOF", err)
				}
				if _, err := r.Seek(int64(len(data)-3), io.SeekStart); err != nil {
					t.Fatal(err)
				}
				if rest, _ := io.ReadAll(r); !bytes.Equal(rest, data[len(data)-3:]) {
					t.Fatalf("read after seek: got %x", rest)
				}
			})
			t.Run("missing", func(t *testing.T) {
				s := open(t, t.TempDir())
				if _, err := s.Open(ctx, "no/such"); !errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("open: got %v, want fs.ErrNotExist", err)
				}
				if _, err := s.Stat(ctx, "no/such"); !errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("stat: got %v, want fs.ErrNotExist", err)
				}
				if err := s.Remove(ctx, "no/such"); err != nil {
					t.Fatalf("remove: got %v, want nil", err)
				}
				if err := s.RemovePrefix(ctx, "no"); err != nil {
					t.Fatalf("remove prefix: got %v, want nil", err)
				}
				if got := keys(t, s, "no"); len(got) != 0 {
					t.Fatalf("list: got %v", got)
				}
			})
			t.Run("replace and remove", func(t *testing.T) {
				s := open(t, t.TempDir())
				mustPut(t, s, "logs/j/e.log", []byte("one"))
				r, err := s.Open(ctx, "logs/j/e.log")
				if err != nil {
					t.Fatal(err)
				}
				defer r.Close()
				mustPut(t, s, "logs/j/e.log", []byte("second"))
				if got := mustGet(t, s, "logs/j/e.log"); string(got) != "second" {
					t.Fatalf("after replace: got %q", got)
				}
				if err := s.Remove(ctx, "logs/j/e.log"); err != nil {
					t.Fatal(err)
				}
				if _, err := s.Open(ctx, "logs/j/e.log"); !errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("open after remove: got %v, want fs.ErrNotExist", err)
				}
				// A Reader opened before keeps reading what it opened.
				if b, err := io.ReadAll(r); err != nil || string(b) != "one" {
					t.Fatalf("reader opened before: got %q, %v", b, err)
				}
			})
			t.Run("prefixes", func(t *testing.T) {
				s := open(t, t.TempDir())
				for _, k := range []string{"e/a/1", "e/a/sub/2", "e/ab/3", "e/b", "f/a/4"} {
					mustPut(t, s, k, []byte(k))
				}
				if got, want := keys(t, s, "e/a"), []string{"e/a/1", "e/a/sub/2"}; !slices.Equal(got, want) {
					t.Fatalf("list e/a: got %v, want %v", got, want)
				}
				if got, want := keys(t, s, "e"), []string{"e/a/1", "e/a/sub/2", "e/ab/3", "e/b"}; !slices.Equal(got, want) {
					t.Fatalf("list e: got %v, want %v", got, want)
				}
				if err := s.RemovePrefix(ctx, "e/a"); err != nil {
					t.Fatal(err)
				}
				if got, want := keys(t, s, "e"), []string{"e/ab/3", "e/b"}; !slices.Equal(got, want) {
					t.Fatalf("after removing e/a: got %v, want %v", got, want)
				}
				if got := mustGet(t, s, "f/a/4"); string(got) != "f/a/4" {
					t.Fatalf("f/a/4: got %q", got)
				}
				if _, err := s.Open(ctx, "e/a/1"); !errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("open e/a/1 after its prefix was removed: got %v", err)
				}
			})
			t.Run("aborted create leaves nothing", func(t *testing.T) {
				dir := t.TempDir()
				s := open(t, dir)
				tmp, err := s.Create("upload-*")
				if err != nil {
					t.Fatal(err)
				}
				if rel, err := filepath.Rel(filepath.Join(dir, TmpDir), tmp.Name()); err != nil || strings.Contains(rel, "..") {
					t.Fatalf("temp file %s is not under the data dir's tmp/", tmp.Name())
				}
				tmp.Write([]byte("half a blob"))
				tmp.Close()
				os.Remove(tmp.Name())
				if _, err := s.Stat(ctx, "j/archive.zip"); !errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("stat: got %v, want fs.ErrNotExist", err)
				}
				if got := keys(t, s, "j"); len(got) != 0 {
					t.Fatalf("list: got %v", got)
				}
				// A commit refused (a bad key) stores nothing either.
				tmp, err = s.Create("upload-*")
				if err != nil {
					t.Fatal(err)
				}
				tmp.Write([]byte("x"))
				if err := s.Commit(ctx, tmp, "j/../../escape"); !errors.Is(err, ErrInvalidKey) {
					t.Fatalf("commit to a bad key: got %v, want ErrInvalidKey", err)
				}
				os.Remove(tmp.Name())
				if got := keys(t, s, "j"); len(got) != 0 {
					t.Fatalf("list after a refused commit: got %v", got)
				}
				if _, err := os.Stat(filepath.Join(dir, "..", "escape")); !errors.Is(err, fs.ErrNotExist) {
					t.Fatalf("a refused commit left a file outside the store: %v", err)
				}
			})
			t.Run("bad keys", func(t *testing.T) {
				s := open(t, t.TempDir())
				for _, k := range []string{"", ".", "/abs", "a/../b", "..", "a//b", "a/", `a\b`, "tmp/x", "tmp"} {
					if _, err := s.Open(ctx, k); !errors.Is(err, ErrInvalidKey) {
						t.Errorf("open %q: got %v, want ErrInvalidKey", k, err)
					}
					if err := s.RemovePrefix(ctx, k); !errors.Is(err, ErrInvalidKey) {
						t.Errorf("remove prefix %q: got %v, want ErrInvalidKey", k, err)
					}
				}
			})
		})
	}
}

func TestValidKey(t *testing.T) {
	tests := []struct {
		key string
		ok  bool
	}{
		{"experiments/x/archive.zip", true},
		{"logs/j/site-a.log", true},
		{"a", true},
		{"tmpx/y", true},
		{"", false},
		{".", false},
		{"..", false},
		{"../a", false},
		{"a/../b", false},
		{"/a", false},
		{"a/", false},
		{"a//b", false},
		{"./a", false},
		{`a\b`, false},
		{"tmp", false},
		{"tmp/upload-1", false},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			if err := ValidKey(tt.key); (err == nil) != tt.ok {
				t.Fatalf("ValidKey(%q): got %v, want ok %v", tt.key, err, tt.ok)
			}
		})
	}
}

func TestOpenURL(t *testing.T) {
	dir := t.TempDir()
	other := t.TempDir()
	tests := []struct {
		url      string
		opts     Options
		wantRoot string // for a file store
		wantErr  bool
	}{
		{url: "", wantRoot: dir},
		{url: "file://", wantRoot: dir},
		{url: "file://" + other, wantRoot: other},
		{url: "file://host/x", wantErr: true},
		{url: "ftp://x/y", wantErr: true},
		{url: "s3://", wantErr: true},
		{url: "s3://key:secret@bucket/p", wantErr: true},
		{url: "s3://bucket/a/../b", wantErr: true},
		{url: "s3://bucket/p", opts: Options{Endpoint: "http://s3.example.com"}, wantErr: true},
		{url: "s3://bucket/p", opts: Options{Endpoint: "ftp://127.0.0.1:1"}, wantErr: true},
		{url: "s3://bucket/p", opts: Options{Endpoint: "https://127.0.0.1:1/path"}, wantErr: true},
		{url: "s3://bucket/p", opts: Options{Endpoint: "https://127.0.0.1:1", CacheSize: -1}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.url, func(t *testing.T) {
			tt.opts.DataDir = dir
			tt.opts.Getenv = func(string) string { return "" }
			s, err := Open(context.Background(), tt.url, tt.opts)
			if tt.wantErr {
				if !errors.Is(err, ErrConfig) {
					t.Fatalf("got %v, want ErrConfig", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if f, ok := s.(*File); !ok || f.Root() != tt.wantRoot {
				t.Fatalf("got %#v, want a file store at %s", s, tt.wantRoot)
			}
		})
	}
}

// TestFileOtherRoot commits into a file store whose root is not the data
// dir: the temp file is copied, not renamed, and nothing is left in tmp/.
func TestFileOtherRoot(t *testing.T) {
	dataDir, root := t.TempDir(), t.TempDir()
	s, err := NewFile(root, dataDir)
	if err != nil {
		t.Fatal(err)
	}
	mustPut(t, s, "experiments/j/archive.zip", []byte("zip"))
	if b, err := os.ReadFile(filepath.Join(root, "experiments", "j", "archive.zip")); err != nil || string(b) != "zip" {
		t.Fatalf("stored file: %q, %v", b, err)
	}
	if left := tmpFiles(t, dataDir); len(left) > 0 {
		t.Fatalf("tmp/ holds %v", left)
	}
	ents, _ := os.ReadDir(filepath.Join(root, "experiments", "j"))
	if len(ents) != 1 {
		t.Fatalf("the blob's folder holds %d files, want 1", len(ents))
	}
}

// TestS3Cache checks the read cache: a blob committed by this store is
// read without a download; another store over the same bucket downloads
// it once, then reads its copy; a key committed again is downloaded again;
// past the cap the least recently opened copy goes.
func TestS3Cache(t *testing.T) {
	ctx := context.Background()
	sub := testPrefix(t)
	writer := mustS3(t, t.TempDir(), sub, 0)
	readerDir := t.TempDir()
	reader := mustS3(t, readerDir, sub, 3000)

	a, b := randomBytes(1200), randomBytes(1200)
	mustPut(t, writer, "x/a", a)
	mustPut(t, writer, "x/b", b)
	if got := mustGet(t, writer, "x/a"); !bytes.Equal(got, a) {
		t.Fatal("writer: x/a differs")
	}
	if hits, misses := writer.CacheStats(); hits != 1 || misses != 0 {
		t.Fatalf("writer after reading what it wrote: %d hits, %d misses, want 1, 0", hits, misses)
	}

	step := func(key string, want []byte, wantHits, wantMisses int64) {
		t.Helper()
		if got := mustGet(t, reader, key); !bytes.Equal(got, want) {
			t.Fatalf("reader: %s differs", key)
		}
		if hits, misses := reader.CacheStats(); hits != wantHits || misses != wantMisses {
			t.Fatalf("reader after %s: %d hits, %d misses, want %d, %d", key, hits, misses, wantHits, wantMisses)
		}
	}
	step("x/a", a, 0, 1) // downloaded
	step("x/a", a, 1, 1) // from the copy
	step("x/b", b, 1, 2) // downloaded: 2400 bytes cached, under 3000
	step("x/a", a, 2, 2) // a is now the most recently used

	a2 := randomBytes(1000)
	mustPut(t, writer, "x/a", a2)
	step("x/a", a2, 2, 3) // a new version: downloaded again; b (older) is evicted to fit
	step("x/b", b, 2, 4)  // so b is downloaded again

	var cached int64
	filepath.WalkDir(filepath.Join(readerDir, CacheDir), func(p string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			fi, _ := e.Info()
			cached += fi.Size()
		}
		return nil
	})
	if cached > 3000 {
		t.Fatalf("the cache holds %d bytes, over its cap of 3000", cached)
	}

	// A new store over the same data dir finds the copies a previous one
	// left.
	again := mustS3(t, readerDir, sub, 3000)
	if got := mustGet(t, again, "x/b"); !bytes.Equal(got, b) {
		t.Fatal("reopened: x/b differs")
	}
	if hits, misses := again.CacheStats(); hits != 1 || misses != 0 {
		t.Fatalf("reopened cache: %d hits, %d misses, want 1, 0", hits, misses)
	}

	// Removing a blob drops its copies.
	if err := reader.Remove(ctx, "x/b"); err != nil {
		t.Fatal(err)
	}
	if _, err := reader.Open(ctx, "x/b"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("open after remove: got %v", err)
	}
	if left := tmpFiles(t, readerDir); len(left) > 0 {
		t.Fatalf("tmp/ holds %v", left)
	}
}

// TestS3BlobLargerThanCache reads a blob larger than the whole cache: it
// is downloaded, read whole, and not kept.
func TestS3BlobLargerThanCache(t *testing.T) {
	sub := testPrefix(t)
	dir := t.TempDir()
	s := mustS3(t, dir, sub, 100)
	data := randomBytes(1000)
	mustPut(t, s, "big", data)
	for range 2 {
		if got := mustGet(t, s, "big"); !bytes.Equal(got, data) {
			t.Fatal("big differs")
		}
	}
	if hits, misses := s.CacheStats(); hits != 0 || misses != 2 {
		t.Fatalf("%d hits, %d misses, want 0, 2", hits, misses)
	}
}
