package job_test

import (
	"archive/zip"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedplane/fedplane/job"
)

// smallBombs is an archive of n entries of 512 KiB of spaces each: every
// entry is under the per-entry ratio check's 1 MiB floor, but together
// they expand far more than the whole-archive limit allows.
func smallBombs(tb testing.TB, n int) []byte {
	entries := []zipEntry{manifestEntry("job.json")}
	spaces := bytes.Repeat([]byte(" "), 512<<10)
	for i := range n {
		entries = append(entries, zipEntry{name: fmt.Sprintf("f%03d", i), body: spaces, method: zip.Deflate})
	}
	return mustZip(tb, entries...)
}

func TestArchiveRatio(t *testing.T) {
	bombs := smallBombs(t, 40)
	tests := []struct {
		name    string
		lim     job.Limits
		wantErr string
	}{
		{name: "default", lim: job.Limits{}, wantErr: "job archive: expands"},
		{name: "lower", lim: job.Limits{MaxArchiveRatio: 10}, wantErr: "the limit is 10"},
		{name: "raised", lim: job.Limits{MaxArchiveRatio: 100_000}},
		{name: "entries", lim: job.Limits{MaxArchiveRatio: 100_000, MaxFiles: 20}, wantErr: "41 entries exceeds the limit of 20"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := job.Inspect(bytes.NewReader(bombs), int64(len(bombs)), tt.lim)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("got %v, want accepted", err)
				}
				return
			}
			if !errors.Is(err, job.ErrInvalid) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want ErrInvalid with %q", err, tt.wantErr)
			}
		})
	}
}

// TestUnpackIn unpacks through an os.Root into a new folder: a name that
// is not one plain name, or one planted as a symlink, is refused without
// writing outside the root, and a failed unpack leaves nothing behind.
func TestUnpackIn(t *testing.T) {
	good := mustZip(t, manifestEntry("job.json"), zipEntry{name: "a/b.txt", body: []byte("b"), method: zip.Deflate})
	bad := mustZip(t, manifestEntry("job.json"), rawDeflated(t, "x", []byte("short"), 100, 0))
	tests := []struct {
		name    string
		archive []byte
		folder  string
		plant   func(t *testing.T, parent, outside string)
		wantErr string
	}{
		{name: "new folder", archive: good, folder: "job1"},
		{name: "parent", archive: good, folder: "..", wantErr: "is not a name"},
		{name: "nested", archive: good, folder: "a/b", wantErr: "is not a name"},
		{name: "absolute", archive: good, folder: "/tmp/x", wantErr: "is not a name"},
		{name: "exists", archive: good, folder: "job1", plant: func(t *testing.T, parent, _ string) {
			os.Mkdir(filepath.Join(parent, "job1"), 0o700)
		}, wantErr: "exists"},
		{name: "symlink planted", archive: good, folder: "job1", plant: func(t *testing.T, parent, outside string) {
			if err := os.Symlink(outside, filepath.Join(parent, "job1")); err != nil {
				t.Fatal(err)
			}
		}, wantErr: "exists"},
		{name: "broken archive", archive: bad, folder: "job1", wantErr: "job archive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent, outside := t.TempDir(), t.TempDir()
			if tt.plant != nil {
				tt.plant(t, parent, outside)
			}
			root, err := os.OpenRoot(parent)
			if err != nil {
				t.Fatal(err)
			}
			defer root.Close()
			_, err = job.UnpackIn(bytes.NewReader(tt.archive), int64(len(tt.archive)), root, tt.folder, job.Limits{})
			if entries, _ := os.ReadDir(outside); len(entries) != 0 {
				t.Fatalf("wrote %d entries outside the root", len(entries))
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if b, err := os.ReadFile(filepath.Join(parent, tt.folder, "a", "b.txt")); err != nil || string(b) != "b" {
					t.Fatalf("unpacked file: %q %v", b, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("got %v, want an error with %q", err, tt.wantErr)
			}
			if entries, _ := os.ReadDir(parent); tt.plant == nil && len(entries) != 0 {
				t.Fatalf("after a failure %s is left", entries[0].Name())
			}
		})
	}
}
