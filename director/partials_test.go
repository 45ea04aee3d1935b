package director

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestLoadParts: start-up takes back a part with its sidecar, truncated to
// the bytes the sidecar counts (a resumed attempt that a crash cut), and
// removes a part without a sidecar (a first attempt a crash cut), with a
// sidecar that fails its checks, shorter than its sidecar says, or unused
// for the TTL, and the sidecars a crash left half written or alone.
func TestLoadParts(t *testing.T) {
	now := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	const ttl = time.Hour
	good := func() partialMeta {
		return partialMeta{Kind: partialUpload, ID: strings.Repeat("ab", 16), Owner: `"user" "alice" "" ""`, Caller: "alice",
			Size: 100, SHA256: strings.Repeat("cd", 32), Held: 40, Created: now.Add(-time.Minute), Last: now.Add(-time.Minute)}
	}
	tests := []struct {
		name     string
		bytes    int                       // written to the part before its sidecar
		after    int                       // appended after the sidecar
		meta     func(m *partialMeta) bool // edits the sidecar; false: write none
		wantHeld int64                     // 0: removed
	}{
		{name: "held", bytes: 40, meta: func(*partialMeta) bool { return true }, wantHeld: 40},
		{name: "a resumed attempt cut by a crash", bytes: 40, after: 25, meta: func(*partialMeta) bool { return true }, wantHeld: 40},
		{name: "no sidecar", bytes: 40, meta: func(*partialMeta) bool { return false }},
		{name: "shorter than its sidecar", bytes: 40, meta: func(m *partialMeta) bool { m.Held = 41; return true }},
		{name: "expired", bytes: 40, meta: func(m *partialMeta) bool { m.Last = now.Add(-ttl); return true }},
		{name: "another kind", bytes: 40, meta: func(m *partialMeta) bool { m.Kind = partialResults; return true }},
		{name: "bad id", bytes: 40, meta: func(m *partialMeta) bool { m.ID = "../../etc/passwd"; return true }},
		{name: "no owner", bytes: 40, meta: func(m *partialMeta) bool { m.Owner = ""; return true }},
		{name: "over the size cap", bytes: 40, meta: func(m *partialMeta) bool { m.Size = 1 << 40; return true }},
		{name: "nothing held", bytes: 0, meta: func(m *partialMeta) bool { m.Held = 0; return true }},
		{name: "results without a header", bytes: 40, meta: func(m *partialMeta) bool { m.Kind = partialResults; return true }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &Director{cfg: Config{DataDir: t.TempDir()}}
			kind := partialUpload
			if tt.name == "results without a header" {
				kind = partialResults
			}
			f, err := d.createPart(kind)
			if err != nil {
				t.Fatal(err)
			}
			f.Write(bytes.Repeat([]byte{7}, tt.bytes))
			m := good()
			if tt.meta(&m) {
				if err := savePart(f, m); err != nil {
					t.Fatal(err)
				}
			}
			f.Write(bytes.Repeat([]byte{8}, tt.after))
			f.Close()
			dir := filepath.Join(d.cfg.DataDir, partialsDir)
			os.WriteFile(filepath.Join(dir, kind+"-1.json.tmp"), []byte("{half"), 0o600)
			os.WriteFile(filepath.Join(dir, kind+"-2.json"), []byte("{}"), 0o600)

			held := loadParts(slog.New(slog.DiscardHandler), d.cfg.DataDir, kind, 1<<30, ttl, now)
			left, _ := os.ReadDir(dir)
			if tt.wantHeld == 0 {
				if len(held) != 0 || len(left) != 0 {
					t.Fatalf("got %d held, %d files left; want none", len(held), len(left))
				}
				return
			}
			if len(held) != 1 || len(left) != 2 {
				t.Fatalf("got %d held, %d files left; want 1 held, its part and sidecar", len(held), len(left))
			}
			defer held[0].f.Close()
			if got := held[0].meta; got.Held != tt.wantHeld || got.ID != m.ID || got.Owner != m.Owner || got.Caller != m.Caller || !got.Last.Equal(m.Last) {
				t.Errorf("sidecar read back %+v, want %+v", got, m)
			}
			b, _ := io.ReadAll(held[0].f)
			if !bytes.Equal(b, bytes.Repeat([]byte{7}, int(tt.wantHeld))) {
				t.Errorf("part holds %d bytes, want the %d counted", len(b), tt.wantHeld)
			}
		})
	}
}

// TestPartialSurvivesClose: a partial upload kept after a cut, closed when
// the director stops, comes back to the next start with its bytes and
// owner, once; a finished one leaves nothing to come back.
func TestPartialSurvivesClose(t *testing.T) {
	clock := newFakeClock()
	cfg := testCfg(t, clock)
	d, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	info := UploadInfo{ID: strings.Repeat("1", 32), Owner: "alice", Caller: "alice", Size: 10, SHA256: strings.Repeat("0", 64), Created: clock.Now()}
	p, err := d.NewPartial(info)
	if err != nil {
		t.Fatal(err)
	}
	d.ReceivePart(p, 10, func(w io.Writer) (int64, error) {
		n, _ := w.Write([]byte("hello"))
		return int64(n), io.ErrUnexpectedEOF // cut
	})
	if err := p.Keep(clock.Now()); err != nil {
		t.Fatal(err)
	}
	p.Close()
	d.Close()

	d2, err := New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	held := d2.HeldUploads(time.Hour, clock.Now())
	if len(held) != 1 || held[0].Held() != 5 || held[0].Info().Owner != "alice" || held[0].Info().ID != info.ID {
		t.Fatalf("after a restart: %d held (%+v); want alice's 5 bytes", len(held), held)
	}
	if again := d2.HeldUploads(time.Hour, clock.Now()); len(again) != 0 {
		t.Fatalf("HeldUploads a second time: %d, want none", len(again))
	}
	p = held[0]
	d2.ReceivePart(p, 10, func(w io.Writer) (int64, error) {
		n, err := w.Write([]byte("world"))
		return int64(n), err
	})
	if _, err := d2.FinishPartial(p, 10, info.SHA256); err == nil {
		t.Fatal("FinishPartial with a wrong sha256: no error")
	}
	if left, _ := os.ReadDir(filepath.Join(cfg.DataDir, partialsDir)); len(left) != 0 {
		t.Fatalf("partials/ holds %d files after the upload ended, want none", len(left))
	}
}
