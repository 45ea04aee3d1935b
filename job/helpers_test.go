package job_test

import (
	"archive/zip"
	"bytes"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// file is one file of a test job folder.
type file struct {
	body []byte
	mode fs.FileMode // 0 means 0644
}

// mustFolder creates a job folder from files; names ending in "/" are
// (empty) folders.
func mustFolder(tb testing.TB, files map[string]file) string {
	tb.Helper()
	dir := tb.TempDir()
	for name, f := range files {
		path := filepath.Join(dir, filepath.FromSlash(name))
		if strings.HasSuffix(name, "/") {
			if err := os.MkdirAll(path, 0o755); err != nil {
				tb.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			tb.Fatal(err)
		}
		mode := f.mode
		if mode == 0 {
			mode = 0o644
		}
		if err := os.WriteFile(path, f.body, mode); err != nil {
			tb.Fatal(err)
		}
		// WriteFile's mode is subject to the umask.
		if err := os.Chmod(path, mode); err != nil {
			tb.Fatal(err)
		}
	}
	return dir
}

// randomBytes returns n bytes that do not compress.
func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	r.Read(b)
	return b
}

// zipEntry is one entry of a hand-made archive.
type zipEntry struct {
	name   string
	body   []byte
	mode   fs.FileMode // 0: none set
	method uint16
	// raw, when set, is written with CreateRaw: body is then the entry's
	// data as stored, and raw's sizes and CRC are written as they are.
	raw *zip.FileHeader
}

// mustZip builds an archive from entries.
func mustZip(tb testing.TB, entries ...zipEntry) []byte {
	tb.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		if e.raw != nil {
			e.raw.Name = e.name
			w, err := zw.CreateRaw(e.raw)
			if err != nil {
				tb.Fatal(err)
			}
			if _, err := w.Write(e.body); err != nil {
				tb.Fatal(err)
			}
			continue
		}
		h := &zip.FileHeader{Name: e.name, Method: e.method}
		if e.mode != 0 {
			h.SetMode(e.mode)
		}
		w, err := zw.CreateHeader(h)
		if err != nil {
			tb.Fatal(err)
		}
		if len(e.body) == 0 {
			continue // a folder's writer refuses even an empty write
		}
		if _, err := w.Write(e.body); err != nil {
			tb.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// manifestEntry is a valid job.json entry named name.
func manifestEntry(name string) zipEntry {
	return zipEntry{name: name, body: []byte(minimalManifest), method: zip.Deflate}
}

// tree is what a folder holds: slash-separated names (folders end in "/")
// with their contents and permission bits.
type treeEntry struct {
	body string
	perm fs.FileMode
}

func mustTree(tb testing.TB, root string) map[string]treeEntry {
	tb.Helper()
	got := map[string]treeEntry{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == root {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		name := filepath.ToSlash(rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		if d.IsDir() {
			got[name+"/"] = treeEntry{perm: info.Mode().Perm()}
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		got[name] = treeEntry{body: string(b), perm: info.Mode().Perm()}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	return got
}
