package job_test

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/fedplane/fedplane/job"
)

// deflate compresses b at the default level.
func deflate(tb testing.TB, b []byte) []byte {
	tb.Helper()
	var buf bytes.Buffer
	w, _ := flate.NewWriter(&buf, flate.DefaultCompression)
	if _, err := w.Write(b); err != nil {
		tb.Fatal(err)
	}
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// rawDeflated is an entry whose header declares unpacked bytes and crc for
// the deflated form of data, whatever data really is.
func rawDeflated(tb testing.TB, name string, data []byte, unpacked uint64, crc uint32) zipEntry {
	comp := deflate(tb, data)
	return zipEntry{name: name, body: comp, raw: &zip.FileHeader{
		Method:             zip.Deflate,
		CRC32:              crc,
		CompressedSize64:   uint64(len(comp)),
		UncompressedSize64: unpacked,
	}}
}

// patchCentral calls fn with the central directory record of the entry
// called name, to make archives archive/zip's writer will not.
func patchCentral(tb testing.TB, b []byte, name string, fn func(rec []byte)) {
	tb.Helper()
	sig := []byte{0x50, 0x4b, 0x01, 0x02}
	for i := 0; ; {
		j := bytes.Index(b[i:], sig)
		if j < 0 {
			tb.Fatalf("no central directory record for %q", name)
		}
		rec := b[i+j:]
		n := int(binary.LittleEndian.Uint16(rec[28:]))
		if len(rec) >= 46+n && string(rec[46:46+n]) == name {
			fn(rec)
			return
		}
		i += j + 4
	}
}

var (
	bombOnce sync.Once
	bomb     []byte
)

// zipBomb is an archive with 100 MiB of zeros in one deflated entry.
func zipBomb(tb testing.TB) []byte {
	bombOnce.Do(func() {
		bomb = mustZip(tb, manifestEntry("job.json"),
			zipEntry{name: "zeros.bin", body: make([]byte, 100<<20), method: zip.Deflate})
	})
	return bomb
}

type badArchive struct {
	name string
	data []byte
	lim  job.Limits
	want string
}

// badArchives are archives Inspect must refuse. big adds the ones too large
// to be useful fuzz seeds.
func badArchives(tb testing.TB, big bool) []badArchive {
	m := manifestEntry("job.json")
	txt := func(name string) zipEntry { return zipEntry{name: name, body: []byte("x"), method: zip.Deflate} }
	valid := mustZip(tb, m, txt("a.txt"))

	overlap := mustZip(tb, m, txt("a"), txt("b"))
	var aOffset []byte
	patchCentral(tb, overlap, "a", func(rec []byte) { aOffset = bytes.Clone(rec[42:46]) })
	patchCentral(tb, overlap, "b", func(rec []byte) { copy(rec[42:46], aOffset) })

	pastEnd := mustZip(tb, m, txt("a"))
	patchCentral(tb, pastEnd, "a", func(rec []byte) { binary.LittleEndian.PutUint32(rec[20:], 1<<30) })

	cases := []badArchive{
		{"garbage", []byte("this is not a zip file at all"), job.Limits{}, "job archive: not a zip file: zip: not a valid zip file"},
		{"empty", nil, job.Limits{}, "job archive: not a zip file"},
		{"truncated", valid[:len(valid)/2], job.Limits{}, "job archive: not a zip file"},
		{"parent", mustZip(tb, m, txt("../x")), job.Limits{}, `job archive: entry "../x" escapes the job folder`},
		{"nested parent", mustZip(tb, m, txt("a/../../x")), job.Limits{}, `job archive: entry "a/../../x" escapes the job folder`},
		{"absolute", mustZip(tb, m, txt("/etc/x")), job.Limits{}, `job archive: entry "/etc/x" is an absolute path`},
		{"backslash", mustZip(tb, m, txt(`a\..\x`)), job.Limits{}, `job archive: entry "a\\..\\x" contains a backslash`},
		{"drive letter", mustZip(tb, m, txt("C:/x")), job.Limits{}, `job archive: entry "C:/x" starts with a drive letter`},
		{"dot element", mustZip(tb, m, txt("a/./b")), job.Limits{}, `job archive: entry "a/./b" is not a clean path`},
		{"empty element", mustZip(tb, m, txt("a//b")), job.Limits{}, `job archive: entry "a//b" is not a clean path`},
		{"NUL", mustZip(tb, m, txt("a\x00b")), job.Limits{}, `job archive: entry "a\x00b" contains a NUL byte`},
		{"long name", mustZip(tb, m, txt(strings.Repeat("a/", 2100)+"x")), job.Limits{}, `is longer than 4096 bytes`},
		{"symbolic link", mustZip(tb, m, zipEntry{name: "link", body: []byte("/etc/passwd"), mode: fs.ModeSymlink | 0o777}), job.Limits{}, `job archive: entry "link" is a symbolic link`},
		{"named pipe", mustZip(tb, m, zipEntry{name: "fifo", mode: fs.ModeNamedPipe | 0o644}), job.Limits{}, `job archive: entry "fifo" is not a regular file or folder`},
		{"folder bit without slash", mustZip(tb, m, zipEntry{name: "d", mode: fs.ModeDir | 0o755}), job.Limits{}, `job archive: entry "d" is marked as a folder`},
		{"duplicate", mustZip(tb, m, txt("a.txt"), txt("a.txt")), job.Limits{}, `job archive: entry "a.txt" appears twice`},
		{"duplicate job.json", mustZip(tb, m, m), job.Limits{}, `job archive: entry "job.json" appears twice`},
		{"file and folder", mustZip(tb, m, zipEntry{name: "a/"}, txt("a")), job.Limits{}, `job archive: entry "a" appears twice`},
		{"under a file", mustZip(tb, m, txt("a"), txt("a/b")), job.Limits{}, `job archive: entry "a/b" lies under "a", which is a file`},
		{"total", mustZip(tb, m, zipEntry{name: "big", body: make([]byte, 2048), method: zip.Deflate}), job.Limits{MaxUnpacked: 1000}, `job archive: unpacked size 2.1 KiB exceeds the limit of 1000 B`},
		{"files", mustZip(tb, m, txt("a"), txt("b")), job.Limits{MaxFiles: 2}, `job archive: 3 entries exceeds the limit of 2`},
		{"method", mustZip(tb, m, zipEntry{name: "a.bz2", body: []byte("BZh"), raw: &zip.FileHeader{Method: 12, CompressedSize64: 3, UncompressedSize64: 3}}), job.Limits{}, `job archive: entry "a.bz2" uses compression method 12`},
		{"encrypted", mustZip(tb, m, zipEntry{name: "secret", body: []byte("xyz"), raw: &zip.FileHeader{Flags: 0x1, CompressedSize64: 3, UncompressedSize64: 3}}), job.Limits{}, `job archive: entry "secret" is encrypted`},
		{"stored sizes differ", mustZip(tb, m, zipEntry{name: "s", body: []byte("xyz"), raw: &zip.FileHeader{CompressedSize64: 3, UncompressedSize64: 300}}), job.Limits{}, `job archive: entry "s" is stored but declares 3 bytes packed and 300 unpacked`},
		{"shared data", overlap, job.Limits{}, `job archive: entries "a" and "b" share data`},
		{"data past the end", pastEnd, job.Limits{}, `job archive: entry "a": its data runs past the end of the archive`},
		{"no job.json", mustZip(tb, txt("train.py")), job.Limits{}, "job archive: no job.json at the top of the archive (or of its single top folder)"},
		{"job.json too deep", mustZip(tb, manifestEntry("a/b/job.json"), txt("a/x")), job.Limits{}, "job archive: no job.json at the top"},
		{"two top folders", mustZip(tb, manifestEntry("a/job.json"), txt("b/x")), job.Limits{}, "job archive: no job.json at the top"},
		{"job.json a folder", mustZip(tb, zipEntry{name: "job.json/"}), job.Limits{}, "job archive: no job.json at the top"},
		{"bad job.json", mustZip(tb, zipEntry{name: "job.json", body: []byte(`{"name":"x","min_envoys":1,"rounds":0,"train":{"command":["a"]}}`)}), job.Limits{}, `job archive: job.json: "rounds" must be at least 1, got 0`},
		{"bad job.json in a folder", mustZip(tb, zipEntry{name: "top/job.json", body: []byte(`{"name":"x","roundz":1}`)}), job.Limits{}, `job archive: top/job.json: unknown key "roundz"`},
		{"job.json too large", mustZip(tb, zipEntry{name: "job.json", body: make([]byte, 2<<20), method: zip.Store}), job.Limits{}, `job archive: job.json: 2 MiB exceeds the limit of 1 MiB`},
		{"job.json corrupt", mustZip(tb, rawDeflated(tb, "job.json", []byte(minimalManifest), uint64(len(minimalManifest)), 1)), job.Limits{}, `job archive: entry "job.json": zip: checksum error`},
	}
	if big {
		cases = append(cases, badArchive{"zip bomb", zipBomb(tb), job.Limits{}, `job archive: entry "zeros.bin" expands 1`})
	}
	return cases
}

func TestInspectRefuses(t *testing.T) {
	for _, tt := range badArchives(t, true) {
		t.Run(tt.name, func(t *testing.T) {
			info, err := job.Inspect(bytes.NewReader(tt.data), int64(len(tt.data)), tt.lim)
			if err == nil {
				t.Fatalf("got %+v, want error containing %q", info, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %q, want it to contain %q", err, tt.want)
			}
			if !errors.Is(err, job.ErrInvalid) {
				t.Errorf("errors.Is(%v, ErrInvalid) = false, want true", err)
			}
			// Unpack refuses the same archives before writing anything.
			dst := filepath.Join(t.TempDir(), "job")
			if _, err := job.Unpack(bytes.NewReader(tt.data), int64(len(tt.data)), dst, tt.lim); err == nil {
				t.Fatalf("Unpack: got nil error, want one")
			}
			if _, err := os.Lstat(dst); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("Unpack left %s behind: %v", dst, err)
			}
		})
	}
}

func TestInspectHugeDirectory(t *testing.T) {
	// 12,000 entries with long names make a central directory of about
	// 1.8 MiB, more than MaxFiles 1 allows archive/zip to read.
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for i := range 12000 {
		if _, err := zw.CreateHeader(&zip.FileHeader{Name: fmt.Sprintf("%0100d", i), Method: zip.Store}); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	_, err := job.Inspect(bytes.NewReader(buf.Bytes()), int64(buf.Len()), job.Limits{MaxFiles: 1})
	checkErr(t, err, "job archive: its central directory is larger than 1 MiB")
}

// errReaderAt fails every read.
type errReaderAt struct{}

var errDisk = errors.New("disk on fire")

func (errReaderAt) ReadAt([]byte, int64) (int, error) { return 0, errDisk }

func TestInspectReadError(t *testing.T) {
	_, err := job.Inspect(errReaderAt{}, 1000, job.Limits{})
	if !errors.Is(err, errDisk) || errors.Is(err, job.ErrInvalid) {
		t.Errorf("got %v, want %v and not ErrInvalid", err, errDisk)
	}
}

func TestInspectRoot(t *testing.T) {
	txt := func(name string) zipEntry { return zipEntry{name: name, body: []byte(name), method: zip.Deflate} }
	tests := []struct {
		name    string
		entries []zipEntry
		root    string
		tree    []string // what Unpack produces
	}{
		{"top", []zipEntry{manifestEntry("job.json"), txt("a/b.txt")}, "", []string{"a/", "a/b.txt", "job.json"}},
		{"top with folders", []zipEntry{zipEntry{name: "x/"}, manifestEntry("job.json"), txt("x/job.json")}, "", []string{"job.json", "x/", "x/job.json"}},
		{"single folder", []zipEntry{zipEntry{name: "mnist/"}, manifestEntry("mnist/job.json"), txt("mnist/train.py"), zipEntry{name: "mnist/data/"}}, "mnist/", []string{"data/", "job.json", "train.py"}},
		{"single folder without its entry", []zipEntry{txt("mnist/a/b.txt"), manifestEntry("mnist/job.json")}, "mnist/", []string{"a/", "a/b.txt", "job.json"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := mustZip(t, tt.entries...)
			info, err := job.Inspect(bytes.NewReader(b), int64(len(b)), job.Limits{})
			if err != nil {
				t.Fatalf("Inspect: %v", err)
			}
			if info.Root != tt.root {
				t.Errorf("Root: got %q, want %q", info.Root, tt.root)
			}
			dst := filepath.Join(t.TempDir(), "job")
			if _, err := job.Unpack(bytes.NewReader(b), int64(len(b)), dst, job.Limits{}); err != nil {
				t.Fatalf("Unpack: %v", err)
			}
			var got []string
			for name := range mustTree(t, dst) {
				got = append(got, name)
			}
			slices.Sort(got)
			if !reflect.DeepEqual(got, tt.tree) {
				t.Errorf("unpacked: got %q, want %q", got, tt.tree)
			}
		})
	}
}

func TestUnpackModes(t *testing.T) {
	b := mustZip(t,
		manifestEntry("job.json"),
		zipEntry{name: "bin/", mode: fs.ModeDir | 0o700},
		zipEntry{name: "bin/run", body: []byte("#!/bin/sh\n"), mode: 0o700},
		zipEntry{name: "secret", body: []byte("s"), mode: 0o600},
		zipEntry{name: "world", body: []byte("w"), mode: 0o777},
	)
	dst := filepath.Join(t.TempDir(), "job")
	if _, err := job.Unpack(bytes.NewReader(b), int64(len(b)), dst, job.Limits{}); err != nil {
		t.Fatalf("Unpack: %v", err)
	}
	tree := mustTree(t, dst)
	want := map[string]fs.FileMode{"bin/": 0o755, "bin/run": 0o755, "secret": 0o644, "world": 0o755, "job.json": 0o644}
	for name, perm := range want {
		if got := tree[name].perm; got != perm {
			t.Errorf("%s: got %v, want %v", name, got, perm)
		}
	}
	fi, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fi.Mode().Perm(), fs.FileMode(0o700); got != want {
		t.Errorf("dst: got %v, want %v", got, want)
	}
}

// TestUnpackLyingArchives feeds archives whose headers pass Inspect but whose
// data does not match them; Unpack must fail and leave dst as it found it.
func TestUnpackLyingArchives(t *testing.T) {
	data := bytes.Repeat([]byte("a"), 10000)
	first := zipEntry{name: "first.txt", body: []byte("extracted before the bad entry"), method: zip.Deflate}
	tests := []struct {
		name  string
		entry zipEntry
		want  string
	}{
		{"larger than declared", rawDeflated(t, "liar.bin", data, 100, crc32.ChecksumIEEE(data[:100])), `job archive: entry "liar.bin" is larger than declared (100 bytes)`},
		{"smaller than declared", rawDeflated(t, "liar.bin", data, 20000, crc32.ChecksumIEEE(data)), `job archive: entry "liar.bin": unexpected EOF`},
		{"wrong checksum", rawDeflated(t, "liar.bin", data, uint64(len(data)), crc32.ChecksumIEEE(data)+1), `job archive: entry "liar.bin": zip: checksum error`},
		{"corrupt data", zipEntry{name: "liar.bin", body: []byte{0xff, 0xff, 0xff, 0xff}, raw: &zip.FileHeader{Method: zip.Deflate, CompressedSize64: 4, UncompressedSize64: 10}}, `job archive: entry "liar.bin": flate: corrupt input`},
	}
	for _, tt := range tests {
		b := mustZip(t, manifestEntry("job.json"), first, zipEntry{name: "sub/"}, tt.entry)
		if _, err := job.Inspect(bytes.NewReader(b), int64(len(b)), job.Limits{}); err != nil {
			t.Fatalf("%s: Inspect: %v", tt.name, err)
		}
		t.Run(tt.name+"/new dst", func(t *testing.T) {
			dst := filepath.Join(t.TempDir(), "job")
			_, err := job.Unpack(bytes.NewReader(b), int64(len(b)), dst, job.Limits{})
			checkErr(t, err, tt.want)
			if _, err := os.Lstat(dst); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("Unpack left %s behind: %v", dst, err)
			}
		})
		t.Run(tt.name+"/existing dst", func(t *testing.T) {
			dst := t.TempDir()
			_, err := job.Unpack(bytes.NewReader(b), int64(len(b)), dst, job.Limits{})
			checkErr(t, err, tt.want)
			if tree := mustTree(t, dst); len(tree) != 0 {
				t.Errorf("Unpack left %v in %s", summary(tree), dst)
			}
		})
	}
}

func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got nil error, want one containing %q", want)
	}
	if !strings.Contains(err.Error(), want) {
		t.Errorf("got %q, want it to contain %q", err, want)
	}
	if !errors.Is(err, job.ErrInvalid) {
		t.Errorf("errors.Is(%v, ErrInvalid) = false, want true", err)
	}
}

func TestUnpackDst(t *testing.T) {
	b := mustZip(t, manifestEntry("job.json"))
	t.Run("not empty", func(t *testing.T) {
		dst := t.TempDir()
		keep := filepath.Join(dst, "keep")
		if err := os.WriteFile(keep, []byte("mine"), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := job.Unpack(bytes.NewReader(b), int64(len(b)), dst, job.Limits{})
		if err == nil || !strings.Contains(err.Error(), "is not empty") || errors.Is(err, job.ErrInvalid) {
			t.Errorf("got %v, want a plain error saying dst is not empty", err)
		}
		if got, err := os.ReadFile(keep); err != nil || string(got) != "mine" {
			t.Errorf("got %q, %v, want the file kept", got, err)
		}
	})
	t.Run("a file", func(t *testing.T) {
		dst := filepath.Join(t.TempDir(), "f")
		if err := os.WriteFile(dst, nil, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := job.Unpack(bytes.NewReader(b), int64(len(b)), dst, job.Limits{})
		if err == nil || !strings.Contains(err.Error(), "is not a folder") {
			t.Errorf("got %v, want an error saying dst is not a folder", err)
		}
	})
	t.Run("existing and empty", func(t *testing.T) {
		dst := t.TempDir()
		if _, err := job.Unpack(bytes.NewReader(b), int64(len(b)), dst, job.Limits{}); err != nil {
			t.Fatalf("Unpack: %v", err)
		}
		if _, err := os.Stat(filepath.Join(dst, "job.json")); err != nil {
			t.Errorf("got %v, want job.json unpacked", err)
		}
	})
}

// fuzzLimits keep fuzzed archives small to unpack.
var fuzzLimits = job.Limits{MaxUnpacked: 1 << 20, MaxFiles: 1000, MaxRatio: 200}

// fuzzSeeds are valid and invalid archives for the fuzz targets to start from.
func fuzzSeeds(f *testing.F) [][]byte {
	dir := mustFolder(f, map[string]file{
		"job.json":   {body: []byte(minimalManifest)},
		"train.py":   {body: bytes.Repeat([]byte("print('hello')\n"), 100)},
		"run.sh":     {body: []byte("#!/bin/sh\n"), mode: 0o755},
		"data/":      {},
		"data/x.bin": {body: randomBytes(300, 9)},
	})
	var buf bytes.Buffer
	if _, err := mustNewArchive(f, dir).WriteTo(&buf); err != nil {
		f.Fatal(err)
	}
	seeds := [][]byte{
		buf.Bytes(),
		mustZip(f, zipEntry{name: "top/"}, manifestEntry("top/job.json"), zipEntry{name: "top/a", body: []byte("a")}),
	}
	for _, c := range badArchives(f, false) {
		seeds = append(seeds, c.data)
	}
	return seeds
}

func FuzzInspect(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := job.Inspect(bytes.NewReader(b), int64(len(b)), fuzzLimits)
		if err != nil {
			// An in-memory archive cannot fail to be read, so every
			// error is about the archive.
			if !errors.Is(err, job.ErrInvalid) {
				t.Fatalf("error %q does not wrap ErrInvalid", err)
			}
			return
		}
		if info.Manifest == nil || info.Manifest.Validate() != nil {
			t.Fatalf("got manifest %+v, want a valid one", info.Manifest)
		}
		if info.Files < 1 || info.Unpacked < 0 || info.Unpacked > fuzzLimits.MaxUnpacked {
			t.Fatalf("got %d files and %d bytes, want at least one file and at most %d bytes", info.Files, info.Unpacked, fuzzLimits.MaxUnpacked)
		}
	})
}

func FuzzUnpack(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		// Unpack inspects before it touches the disk; skipping the temp
		// folder for archives Inspect refuses keeps the fuzzer fast.
		if _, err := job.Inspect(bytes.NewReader(b), int64(len(b)), fuzzLimits); err != nil {
			return
		}
		base := t.TempDir()
		dst := filepath.Join(base, "dst")
		info, err := job.Unpack(bytes.NewReader(b), int64(len(b)), dst, fuzzLimits)

		files := 0
		werr := filepath.WalkDir(base, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if path != base && path != dst && !strings.HasPrefix(path, dst+string(filepath.Separator)) {
				t.Errorf("Unpack wrote %s, outside %s", path, dst)
			}
			if d.Type()&fs.ModeSymlink != 0 {
				t.Errorf("Unpack made a symbolic link %s", path)
			}
			if d.Type().IsRegular() {
				files++
			}
			return nil
		})
		if werr != nil {
			t.Fatal(werr)
		}
		if err != nil {
			if _, serr := os.Lstat(dst); !errors.Is(serr, fs.ErrNotExist) {
				t.Fatalf("Unpack failed (%v) but left %s behind", err, dst)
			}
			return
		}
		if files != info.Files {
			t.Fatalf("got %d files on disk, want %d", files, info.Files)
		}
	})
}
