package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/director/directortest"
)

// cuttingAdmin serves download_job_zip of archive as the director does
// (whole-zip size and sha256 in the meta, the zip from a requested offset
// when the sha256 matches) but drops the first connection after cut bytes
// of the body. announce, when set, is the sha256 announced instead of the
// zip's. It records each request's meta.
type cuttingAdmin struct {
	archive  []byte
	cut      int
	announce string

	mu    sync.Mutex
	metas []map[string]any
	sent  int
}

func (a *cuttingAdmin) start(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	sum := sha256.Sum256(a.archive)
	announce := a.announce
	if announce == "" {
		announce = hex.EncodeToString(sum[:])
	}
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			req, err := adminproto.ReadMessage(bufio.NewReader(c), adminproto.MaxTextSize)
			if err != nil {
				c.Close()
				continue
			}
			a.mu.Lock()
			a.metas = append(a.metas, req.Meta)
			first := len(a.metas) == 1
			a.mu.Unlock()
			off := 0
			if v, ok := req.Meta["offset"].(float64); ok && req.Meta["sha256"] == announce {
				off = int(v)
			}
			meta, _ := adminproto.EncodeMessage(ok(map[string]any{"job_id": asked, "jobStatus": "finished",
				"size": len(a.archive), "sha256": announce, "offset": off}))
			var frame bytes.Buffer
			adminproto.WriteBinary(&frame, meta, uint64(len(a.archive)-off), bytes.NewReader(a.archive[off:]))
			b := frame.Bytes()
			head := len(b) - (len(a.archive) - off) - adminproto.FooterSize
			if first {
				b = b[:head+a.cut]
			}
			a.mu.Lock()
			a.sent += min(len(b)-head, len(a.archive)-off)
			a.mu.Unlock()
			c.Write(b)
			c.Close()
		}
	}()
	return lis.Addr().String()
}

func TestDownloadJobResumes(t *testing.T) {
	archive := directortest.ZipWithManifest(t, `{"name": "r", "min_envoys": 1, "rounds": 1, "train": {"command": ["true"]}}`,
		"metrics.csv", strings.Repeat("round,origin,task,name,value,time\n", 3000))
	half := len(archive) / 2
	tests := []struct {
		name     string
		announce string
		wantErr  string
		wantSent int
	}{
		{name: "resumes where it was cut", wantSent: len(archive)},
		{name: "a wrong sha256 is caught", announce: strings.Repeat("ab", 32), wantErr: "the zip received has sha256", wantSent: len(archive)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &cuttingAdmin{archive: archive, cut: half, announce: tt.announce}
			addr := a.start(t)
			dir := t.TempDir()
			_, stderr, code := runFladmin(t, addr, "download-job", "-d", dir, asked)
			if tt.wantErr != "" {
				if code != 1 || !strings.Contains(stderr, tt.wantErr) {
					t.Fatalf("exit %d, stderr %q; want 1 and %q", code, stderr, tt.wantErr)
				}
			} else if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			a.mu.Lock()
			defer a.mu.Unlock()
			if len(a.metas) != 2 {
				t.Fatalf("%d requests, want 2", len(a.metas))
			}
			if _, ok := a.metas[0]["offset"]; ok {
				t.Errorf("first request has an offset: %v", a.metas[0])
			}
			if got := a.metas[1]["offset"]; got != float64(half) {
				t.Errorf("second request's offset %v, want %d", got, half)
			}
			if a.sent != tt.wantSent {
				t.Errorf("sent %d body bytes in all, want %d", a.sent, tt.wantSent)
			}
			if !strings.Contains(stderr, fmt.Sprintf("cut off after %d bytes held", half)) {
				t.Errorf("stderr %q does not say the download was cut", stderr)
			}
			entries, _ := os.ReadDir(dir)
			if tt.wantErr != "" {
				if len(entries) != 0 {
					t.Errorf("-d holds %d entries after a failed download", len(entries))
				}
				return
			}
			if _, err := os.Stat(filepath.Join(dir, asked, "metrics.csv")); err != nil {
				t.Fatalf("results not unpacked: %v", err)
			}
		})
	}
}
