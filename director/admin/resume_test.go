package admin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"hash/crc32"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/director"
	"github.com/fedplane/fedplane/store"
)

// TestDownloadJobZipOffset: the results zip of a job is the same bytes
// each time it is made, and a request with an offset and the zip's sha256
// gets the rest of it; one for another zip gets all of it.
func TestDownloadJobZipOffset(t *testing.T) {
	ctx := context.Background()
	d := mustNew(t, testCfg(t, newFakeClock()))
	c, _ := mustServeAdmin(t, d, Config{})
	reply := submit(t, c, zipOf(t, writeJobDir(t, testManifest)))
	id, _ := reply.Meta[api.MetaJobID].(string)

	get := func(t *testing.T, meta map[string]any) (*adminproto.Message, []byte) {
		t.Helper()
		req := adminproto.NewRequest(api.CmdDownloadJobZip + " " + id)
		for k, v := range meta {
			req.Meta[k] = v
		}
		var body bytes.Buffer
		m, err := c.Download(ctx, req, 1<<30, &body)
		if err != nil {
			t.Fatal(err)
		}
		return m, body.Bytes()
	}
	m, whole := get(t, nil)
	sum := sha256.Sum256(whole)
	hexSum := hex.EncodeToString(sum[:])
	if m.Meta[api.MetaSHA256] != hexSum || m.Meta[api.MetaSize] != float64(len(whole)) || m.Meta[api.MetaOffset] != float64(0) {
		t.Fatalf("reply meta %v, want sha256 %s, size %d, offset 0", m.Meta, hexSum, len(whole))
	}
	size := len(whole)
	tests := []struct {
		name       string
		meta       map[string]any
		wantOffset int
		wantStatus string
	}{
		{name: "again, the same zip", meta: nil, wantOffset: 0},
		{name: "from the middle", meta: map[string]any{api.MetaOffset: size / 2, api.MetaSHA256: hexSum}, wantOffset: size / 2},
		{name: "nothing left", meta: map[string]any{api.MetaOffset: size, api.MetaSHA256: hexSum}, wantOffset: size},
		{name: "another zip's offset", meta: map[string]any{api.MetaOffset: size / 2, api.MetaSHA256: "00"}, wantOffset: 0},
		{name: "negative", meta: map[string]any{api.MetaOffset: -1, api.MetaSHA256: hexSum}, wantStatus: adminproto.StatusSyntaxError},
		{name: "past the end", meta: map[string]any{api.MetaOffset: size + 1, api.MetaSHA256: hexSum}, wantStatus: adminproto.StatusSyntaxError},
		{name: "not a number", meta: map[string]any{api.MetaOffset: "10", api.MetaSHA256: hexSum}, wantStatus: adminproto.StatusSyntaxError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, body := get(t, tt.meta)
			if tt.wantStatus != "" {
				if m.Status() != tt.wantStatus {
					t.Fatalf("status %s (%q), want %s", m.Status(), m.Info(), tt.wantStatus)
				}
				return
			}
			if m.Status() != adminproto.StatusOK {
				t.Fatalf("status %s (%q)", m.Status(), m.Info())
			}
			if got := m.Meta[api.MetaOffset]; got != float64(tt.wantOffset) {
				t.Errorf("reply offset %v, want %d", got, tt.wantOffset)
			}
			if !bytes.Equal(body, whole[tt.wantOffset:]) {
				t.Errorf("got %d bytes, want the zip's last %d", len(body), size-tt.wantOffset)
			}
		})
	}
}

// resumable is a resumable submit_job request of body's bytes from off,
// as user (without TLS the caller a request names).
func resumable(t *testing.T, user, id string, whole []byte, off int, sum string) []byte {
	t.Helper()
	req := adminproto.NewRequest(api.CmdSubmitJob)
	req.Meta[api.MetaUser] = user
	req.Meta[api.MetaUploadID] = id
	req.Meta[api.MetaOffset] = off
	req.Meta[api.MetaSize] = len(whole)
	req.Meta[api.MetaSHA256] = sum
	meta, err := adminproto.EncodeMessage(req)
	if err != nil {
		t.Fatal(err)
	}
	return rawFrame(meta, whole[off:], crc32.ChecksumIEEE(whole[off:]))
}

// exchangeRaw sends frame, or its first cut bytes and closes the
// connection when cut > 0; it returns the reply, nil when cut.
func exchangeRaw(t *testing.T, c *adminproto.Client, frame []byte, cut int) *adminproto.Message {
	t.Helper()
	conn, err := net.Dial("tcp", c.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if cut > 0 {
		conn.Write(frame[:cut])
		return nil
	}
	conn.Write(frame)
	reply, err := adminproto.ReadMessage(conn, adminproto.MaxTextSize)
	if err != nil {
		t.Fatal(err)
	}
	return reply
}

// uploadHeld asks upload_status as user.
func uploadHeld(t *testing.T, c *adminproto.Client, user, id string) *adminproto.Message {
	t.Helper()
	req := adminproto.NewRequest(api.CmdUploadStatus + " " + id)
	req.Meta[api.MetaUser] = user
	reply, err := c.Do(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return reply
}

// waitHeld waits until the director holds want bytes of upload id (the
// handler of a cut connection finishes after the client has gone).
func waitHeld(t *testing.T, c *adminproto.Client, user, id string, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		reply := uploadHeld(t, c, user, id)
		if reply.Meta[api.MetaOffset] == float64(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("upload_status %s: %s %q offset %v, want %d", id, reply.Status(), reply.Info(), reply.Meta[api.MetaOffset], want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestResumableUpload(t *testing.T) {
	clock := newFakeClock()
	d := mustNew(t, testCfg(t, clock))
	c, _ := mustServeAdmin(t, d, Config{})
	whole := zipOf(t, writeJobDir(t, testManifest))
	s := sha256.Sum256(whole)
	sum := hex.EncodeToString(s[:])
	const id = "0123456789abcdef0123456789abcdef"
	headLen := len(resumable(t, "alice", id, whole, 0, sum)) - len(whole) - adminproto.FooterSize
	half := len(whole) / 2

	// Cut after half the body: the director holds exactly that much.
	exchangeRaw(t, c, resumable(t, "alice", id, whole, 0, sum), headLen+half)
	waitHeld(t, c, "alice", id, half)

	if reply := uploadHeld(t, c, "bob", id); reply.Status() == adminproto.StatusOK {
		t.Errorf("another caller learns of alice's upload: %v", reply.Meta)
	}
	tests := []struct {
		name       string
		user       string
		off        int
		sum        string
		wantStatus string
		wantInfo   string
		wantHeld   any // the reply's offset
	}{
		{name: "wrong offset", user: "alice", off: 10, sum: sum, wantStatus: adminproto.StatusError, wantInfo: "holds", wantHeld: float64(half)},
		{name: "another caller", user: "bob", off: half, sum: sum, wantStatus: adminproto.StatusNotAuthorized, wantInfo: "another caller's"},
		{name: "another archive", user: "alice", off: half, sum: strings.Repeat("00", 32), wantStatus: adminproto.StatusError, wantInfo: "began as"},
		{name: "the rest", user: "alice", off: half, sum: sum, wantStatus: adminproto.StatusOK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reply := exchangeRaw(t, c, resumable(t, tt.user, id, whole, tt.off, tt.sum), 0)
			if reply.Status() != tt.wantStatus || !strings.Contains(reply.Info(), tt.wantInfo) {
				t.Fatalf("got %s %q, want %s %q", reply.Status(), reply.Info(), tt.wantStatus, tt.wantInfo)
			}
			if tt.wantHeld != nil && reply.Meta[api.MetaOffset] != tt.wantHeld {
				t.Errorf("refusal says the director holds %v, want %v", reply.Meta[api.MetaOffset], tt.wantHeld)
			}
		})
	}
	jobs, err := d.ListJobs(context.Background(), store.ExperimentFilter{})
	if err != nil || len(jobs) != 1 || jobs[0].ArchiveSHA256 != sum || jobs[0].ArchiveSize != int64(len(whole)) {
		t.Fatalf("jobs stored: %+v, %v; want one of sha256 %s", jobs, err, sum)
	}
	if reply := uploadHeld(t, c, "alice", id); reply.Status() == adminproto.StatusOK {
		t.Errorf("a finished upload is still held: %v", reply.Meta)
	}
}

func TestResumableUploadRefusals(t *testing.T) {
	clock := newFakeClock()
	d := mustNew(t, testCfg(t, clock))
	c, _ := mustServeAdmin(t, d, Config{})
	whole := zipOf(t, writeJobDir(t, testManifest))
	s := sha256.Sum256(whole)
	sum := hex.EncodeToString(s[:])
	headLen := len(resumable(t, "carol", strings.Repeat("a", 32), whole, 0, sum)) - len(whole) - adminproto.FooterSize
	ids := []string{strings.Repeat("1", 32), strings.Repeat("2", 32), strings.Repeat("3", 32)}

	t.Run("a wrong sha256 stores nothing", func(t *testing.T) {
		bad := strings.Repeat("ab", 32)
		reply := exchangeRaw(t, c, resumable(t, "carol", strings.Repeat("f", 32), whole, 0, bad), 0)
		if reply.Status() == adminproto.StatusOK || !strings.Contains(reply.Info(), "sha256") {
			t.Fatalf("got %s %q, want a refusal naming the sha256", reply.Status(), reply.Info())
		}
		assertNoUploadLeft(t, d)
	})
	for _, bad := range []struct{ name, id string }{{"short id", "abc"}, {"upper-case id", strings.Repeat("A", 32)}} {
		t.Run(bad.name, func(t *testing.T) {
			reply := exchangeRaw(t, c, resumable(t, "carol", bad.id, whole, 0, sum), 0)
			if reply.Status() != adminproto.StatusSyntaxError {
				t.Fatalf("got %s %q, want syntax_error", reply.Status(), reply.Info())
			}
		})
	}
	t.Run("a caller holds at most DefaultUploadsPerCaller", func(t *testing.T) {
		for _, id := range ids[:DefaultUploadsPerCaller] {
			exchangeRaw(t, c, resumable(t, "carol", id, whole, 0, sum), headLen+100)
			waitHeld(t, c, "carol", id, 100)
		}
		reply := exchangeRaw(t, c, resumable(t, "carol", ids[DefaultUploadsPerCaller], whole, 0, sum), 0)
		if reply.Status() == adminproto.StatusOK || !strings.Contains(reply.Info(), "partial uploads of yours") {
			t.Fatalf("got %s %q, want a refusal naming the cap", reply.Status(), reply.Info())
		}
	})
	t.Run("held uploads expire", func(t *testing.T) {
		clock.Add(DefaultUploadTTL)
		if reply := uploadHeld(t, c, "carol", ids[0]); reply.Status() == adminproto.StatusOK {
			t.Fatalf("upload_status after the TTL: %s %v", reply.Status(), reply.Meta)
		}
		assertNoUploadLeft(t, d)
	})
}

// serveRestartable opens a director on cfg and serves its admin channel on
// loopback; stop ends both (the test's end calls it too), as a director's
// stop does, so that another may start on cfg's data dir.
func serveRestartable(t *testing.T, cfg director.Config) (c *adminproto.Client, d *director.Director, stop func()) {
	t.Helper()
	d, err := director.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- New(d, Config{}).Serve(ctx, lis) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Serve: %v", err)
			}
			d.Close()
		})
	}
	t.Cleanup(stop)
	return &adminproto.Client{Addr: lis.Addr().String(), Timeout: 5 * time.Second}, d, stop
}

// TestResumableUploadAfterRestart: partial uploads cut before a director
// restart resume after it from the bytes held, still only for the caller
// that began them, within the same bounds; those unused for the TTL while
// the director was down are dropped at its start.
func TestResumableUploadAfterRestart(t *testing.T) {
	clock := newFakeClock()
	cfg := testCfg(t, clock)
	c, _, stop := serveRestartable(t, cfg)
	whole := zipOf(t, writeJobDir(t, testManifest))
	s := sha256.Sum256(whole)
	sum := hex.EncodeToString(s[:])
	id, other := strings.Repeat("1", 32), strings.Repeat("2", 32)
	headLen := len(resumable(t, "alice", id, whole, 0, sum)) - len(whole) - adminproto.FooterSize
	half := len(whole) / 2
	exchangeRaw(t, c, resumable(t, "alice", id, whole, 0, sum), headLen+half)
	waitHeld(t, c, "alice", id, half)
	exchangeRaw(t, c, resumable(t, "alice", other, whole, 0, sum), headLen+100)
	waitHeld(t, c, "alice", other, 100)
	stop()

	c, d, stop := serveRestartable(t, cfg)
	t.Run("only its owner learns of it", func(t *testing.T) {
		if reply := uploadHeld(t, c, "bob", id); reply.Status() == adminproto.StatusOK {
			t.Fatalf("bob learns of alice's upload after the restart: %v", reply.Meta)
		}
		if reply := exchangeRaw(t, c, resumable(t, "bob", id, whole, half, sum), 0); reply.Status() != adminproto.StatusNotAuthorized {
			t.Fatalf("bob resumes alice's upload after the restart: %s %q, want %s", reply.Status(), reply.Info(), adminproto.StatusNotAuthorized)
		}
		waitHeld(t, c, "alice", id, half)
	})
	t.Run("the caps hold", func(t *testing.T) {
		// Without TLS the per-caller cap counts by host: alice's two.
		reply := exchangeRaw(t, c, resumable(t, "alice", strings.Repeat("3", 32), whole, 0, sum), 0)
		if reply.Status() == adminproto.StatusOK || !strings.Contains(reply.Info(), "partial uploads of yours") {
			t.Fatalf("a third upload after the restart: %s %q, want a refusal naming the cap", reply.Status(), reply.Info())
		}
	})
	t.Run("its owner resumes it", func(t *testing.T) {
		if reply := exchangeRaw(t, c, resumable(t, "alice", id, whole, half, sum), 0); reply.Status() != adminproto.StatusOK {
			t.Fatalf("alice resumes after the restart: %s %q", reply.Status(), reply.Info())
		}
		jobs, err := d.ListJobs(context.Background(), store.ExperimentFilter{})
		if err != nil || len(jobs) != 1 || jobs[0].ArchiveSHA256 != sum {
			t.Fatalf("jobs stored: %+v, %v; want one of sha256 %s", jobs, err, sum)
		}
	})
	t.Run("expired while the director was down", func(t *testing.T) {
		stop()
		clock.Add(DefaultUploadTTL)
		c, _, _ := serveRestartable(t, cfg)
		if reply := uploadHeld(t, c, "alice", other); reply.Status() == adminproto.StatusOK {
			t.Errorf("upload held after its TTL passed: %v", reply.Meta)
		}
		if parts, _ := filepath.Glob(filepath.Join(cfg.DataDir, partialsDir, "*")); len(parts) != 0 {
			t.Errorf("partials left after their TTL: %v", parts)
		}
	})
}
