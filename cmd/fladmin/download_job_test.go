package main

import (
	"bufio"
	"bytes"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/director/directortest"
)

// hostileAdmin answers every download with a binary reply whose meta says
// job_id = id and whose body is archive, whatever was asked.
func hostileAdmin(t *testing.T, id string, archive []byte) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	meta, err := adminproto.EncodeMessage(ok(map[string]any{"job_id": id, "jobStatus": "finished", "size": len(archive)}))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := adminproto.ReadMessage(bufio.NewReader(c), adminproto.MaxTextSize); err != nil {
					return
				}
				adminproto.WriteBinary(c, meta, uint64(len(archive)), bytes.NewReader(archive))
			}()
		}
	}()
	return lis.Addr().String()
}

const asked = "0b5a6a7e-1111-4222-8333-444455556666"

// TestDownloadJobConfined runs download-job against a director that lies:
// job ids that are paths, an id not asked for, archives that climb out,
// and symlinks planted in -d. Nothing is written or removed outside -d,
// and -d keeps no temp files.
func TestDownloadJobConfined(t *testing.T) {
	results := directortest.ZipWithManifest(t, `{"name": "r", "min_envoys": 1, "rounds": 1, "train": {"command": ["true"]}}`, "metrics.csv", "round\n")
	climbing := directortest.ZipWithManifest(t, `{"name": "r", "min_envoys": 1, "rounds": 1, "train": {"command": ["true"]}}`, "../../escaped", "x")
	tests := []struct {
		name    string
		id      string
		archive []byte
		// plant prepares -d (dir) given a folder outside it.
		plant   func(t *testing.T, dir, outside string)
		wantErr string
		want    []string // -d's entries afterwards
	}{
		{name: "honest", id: asked, archive: results, want: []string{asked}},
		{name: "parent path", id: "../../etc", archive: results, wantErr: "job_id"},
		{name: "climbing a prefix", id: asked + "/../../x", archive: results, wantErr: "job_id"},
		{name: "absolute path", id: "/tmp/evil", archive: results, wantErr: "job_id"},
		{name: "slash", id: asked + "/x", archive: results, wantErr: "job_id"},
		{name: "dot", id: ".", archive: results, wantErr: "job_id"},
		{name: "another job", id: "ffffffff-1111-4222-8333-444455556666", archive: results, wantErr: "not the one asked for"},
		{name: "archive climbs out", id: asked, archive: climbing, wantErr: "escapes"},
		{name: "symlink as the job folder", id: asked, archive: results, plant: func(t *testing.T, dir, outside string) {
			os.Symlink(outside, filepath.Join(dir, asked))
		}, wantErr: "already exists", want: []string{asked}},
		{name: "symlink as the old staging folder", id: asked, archive: results, plant: func(t *testing.T, dir, outside string) {
			os.Symlink(outside, filepath.Join(dir, ".fladmin-"+asked))
		}, want: []string{".fladmin-" + asked, asked}},
		{name: "symlinked parent in the id", id: "link", archive: results, plant: func(t *testing.T, dir, outside string) {
			os.Symlink(outside, filepath.Join(dir, "link"))
		}, wantErr: "not the one asked for", want: []string{"link"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base := t.TempDir()
			dir, outside := filepath.Join(base, "d"), filepath.Join(base, "outside")
			os.Mkdir(dir, 0o755)
			os.Mkdir(outside, 0o755)
			keep := filepath.Join(outside, "keep")
			os.WriteFile(keep, []byte("mine"), 0o644)
			if tt.plant != nil {
				tt.plant(t, dir, outside)
			}
			addr := hostileAdmin(t, tt.id, tt.archive)
			_, stderr, code := runFladmin(t, addr, "download-job", "-d", dir, asked)
			if tt.wantErr != "" {
				if code != 1 || !strings.Contains(stderr, tt.wantErr) {
					t.Fatalf("exit %d, stderr %q; want 1 and %q", code, stderr, tt.wantErr)
				}
			} else if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			// Outside -d: exactly what was there, untouched.
			entries, _ := os.ReadDir(outside)
			if b, err := os.ReadFile(keep); len(entries) != 1 || err != nil || string(b) != "mine" {
				t.Fatalf("outside -d: %d entries, keep %q %v", len(entries), b, err)
			}
			for _, up := range []string{filepath.Join(base, "etc"), filepath.Join(base, "escaped"), "/tmp/evil"} {
				if _, err := os.Lstat(up); err == nil {
					t.Fatalf("%s was written", up)
				}
			}
			var got []string
			entries, _ = os.ReadDir(dir)
			for _, e := range entries {
				got = append(got, e.Name())
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("-d holds %q, want %q", got, tt.want)
			}
			if tt.wantErr == "" {
				if _, err := os.Stat(filepath.Join(dir, asked, "metrics.csv")); err != nil {
					t.Fatalf("results not unpacked: %v", err)
				}
			}
		})
	}
}
