package job_test

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestArchiveSetTimeAndWriteFrom: with SetTime, two folders of the same
// content written at different times zip to the same bytes, and WriteFrom
// writes exactly the tail of that zip from any offset.
func TestArchiveSetTimeAndWriteFrom(t *testing.T) {
	stamp := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	zipOf := func(t *testing.T, mtime time.Time) []byte {
		t.Helper()
		dir := mustFolder(t, jobFolder())
		filepath.WalkDir(dir, func(p string, _ os.DirEntry, _ error) error { return os.Chtimes(p, mtime, mtime) })
		a := mustNewArchive(t, dir)
		a.SetTime(stamp)
		var b bytes.Buffer
		if _, err := a.WriteTo(&b); err != nil {
			t.Fatal(err)
		}
		return b.Bytes()
	}
	first := zipOf(t, time.Unix(1e9, 0))
	if second := zipOf(t, time.Unix(1.5e9, 7)); !bytes.Equal(first, second) {
		t.Fatal("the same content at other times zips to other bytes")
	}
	dir := mustFolder(t, jobFolder())
	a := mustNewArchive(t, dir)
	a.SetTime(stamp)
	size := int(a.Size())
	for _, off := range []int{0, 1, size / 3, size - 1, size} {
		var b bytes.Buffer
		n, err := a.WriteFrom(&b, int64(off))
		if err != nil {
			t.Fatalf("WriteFrom(%d): %v", off, err)
		}
		if n != int64(size-off) || !bytes.Equal(b.Bytes(), first[off:]) {
			t.Errorf("WriteFrom(%d): got %d bytes (n=%d), want the zip's last %d", off, b.Len(), n, size-off)
		}
	}
	for _, off := range []int64{-1, int64(size) + 1} {
		if _, err := a.WriteFrom(&bytes.Buffer{}, off); err == nil {
			t.Errorf("WriteFrom(%d): no error", off)
		}
	}
}
