package admin

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/director"
	"github.com/fedplane/fedplane/director/directortest"
	"github.com/fedplane/fedplane/store"
)

// Layout of the data dir the tests look into.
const (
	tmpDir         = "tmp"
	experimentsDir = "experiments"
	archiveFile    = "archive.zip"
	partialsDir    = "partials"
)

var (
	newFakeClock    = directortest.NewClock
	testCfg         = directortest.Config
	mustNew         = directortest.New
	testManifest    = directortest.Manifest
	writeJobDir     = directortest.JobDir
	testModel       = directortest.Model
	zipOf           = directortest.Zip
	zipWithManifest = directortest.ZipWithManifest
	submit          = directortest.Submit
	do              = directortest.Do
)

// mustServeAdmin serves d's admin channel on loopback until the test ends
// and returns a client of it and the server.
func mustServeAdmin(tb testing.TB, d *director.Director, cfg Config) (*adminproto.Client, *Server) {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := New(d, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, lis) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("Serve: %v", err)
		}
	})
	return &adminproto.Client{Addr: lis.Addr().String(), Timeout: 5 * time.Second}, srv
}

// waitActive waits until n connections hold a slot of srv: a connection
// takes its slot once its handshake is done, not when it is accepted.
func waitActive(tb testing.TB, srv *Server, n int64) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for srv.active.Load() != n {
		if time.Now().After(deadline) {
			tb.Fatalf("connections holding a slot: got %d, want %d", srv.active.Load(), n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// assertNoUploadLeft checks that neither a job nor a temp file was left.
func assertNoUploadLeft(tb testing.TB, d *director.Director) {
	tb.Helper()
	exps, err := d.ListJobs(context.Background(), store.ExperimentFilter{})
	if err != nil {
		tb.Fatal(err)
	}
	if len(exps) != 0 {
		tb.Fatalf("jobs: got %d, want none", len(exps))
	}
	for _, sub := range []string{tmpDir, experimentsDir, partialsDir} {
		entries, _ := os.ReadDir(filepath.Join(d.Config().DataDir, sub))
		if len(entries) != 0 {
			tb.Fatalf("%s/ holds %d entries, want none", sub, len(entries))
		}
	}
}

func TestAdminSubmitAndManageJob(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	d := mustNew(t, testCfg(t, clock))
	c, _ := mustServeAdmin(t, d, Config{})
	body := zipOf(t, writeJobDir(t, testManifest))

	reply := submit(t, c, body)
	if reply.Status() != adminproto.StatusOK {
		t.Fatalf("submit: got %s %q, want ok", reply.Status(), reply.Info())
	}
	id, _ := reply.Meta["job_id"].(string)
	e, err := d.FindJob(ctx, id)
	if err != nil {
		t.Fatalf("job %q not stored: %v", id, err)
	}
	sum := sha256.Sum256(body)
	if e.Status != api.JobPending || e.Name != "mnist" || e.ArchiveSHA256 != hex.EncodeToString(sum[:]) || e.ArchiveSize != int64(len(body)) {
		t.Fatalf("stored job: got %+v", e)
	}
	onDisk, err := os.ReadFile(filepath.Join(d.Config().DataDir, e.ArchivePath))
	if err != nil || !bytes.Equal(onDisk, body) {
		t.Fatalf("archive on disk differs from the upload (%v)", err)
	}
	if fi, _ := os.Stat(filepath.Join(d.Config().DataDir, e.ArchivePath)); fi.Mode().Perm() != 0o600 {
		t.Fatalf("archive mode: got %v, want 0600", fi.Mode().Perm())
	}
	clock.Add(time.Second) // list_jobs orders by submit time
	second := submit(t, c, body)
	secondID, _ := second.Meta["job_id"].(string)

	tests := []struct {
		command    string
		wantStatus string
		wantText   string // in the info (errors) or the encoded reply
	}{
		{"list_jobs", adminproto.StatusOK, secondID},
		{"list_jobs -n mni -m 1", adminproto.StatusOK, secondID},
		{"list_jobs -n other", adminproto.StatusOK, "No jobs."},
		{"list_jobs -m x", adminproto.StatusSyntaxError, "list_jobs"},
		{"list_jobs extra", adminproto.StatusSyntaxError, "unexpected arguments"},
		{"get_job_meta " + id[:8] + "-", adminproto.StatusOK, `"min_envoys":1`},
		{"get_job_meta " + id, adminproto.StatusOK, id},
		{"get_job_meta abc", adminproto.StatusInvalidJobID, "too short"},
		{"get_job_meta ffffffff-ffff", adminproto.StatusInvalidJobID, "no job"},
		{"get_job_meta", adminproto.StatusSyntaxError, "usage"},
		{"abort_job " + id, adminproto.StatusOK, "Aborted"},
		{"abort_job " + id, adminproto.StatusJobNotRunning, "job " + id + " is aborted"},
		{"delete_job " + id, adminproto.StatusOK, "Deleted"},
		{"get_job_meta " + id, adminproto.StatusInvalidJobID, "no job"},
		{"list_envoys", adminproto.StatusOK, "NAME"},
		{"check_status", adminproto.StatusOK, "jobs: 1 pending"},
		{"shutdown_everything", adminproto.StatusSyntaxError, "unknown command"},
		{"submit_job", adminproto.StatusSyntaxError, "binary request"},
	}
	for _, tt := range tests {
		t.Run(tt.command, func(t *testing.T) {
			reply := do(t, c, tt.command)
			if reply.Status() != tt.wantStatus {
				t.Fatalf("status: got %s (%q), want %s", reply.Status(), reply.Info(), tt.wantStatus)
			}
			enc, _ := adminproto.EncodeMessage(reply)
			if !strings.Contains(reply.Info()+string(enc), tt.wantText) {
				t.Fatalf("reply %s does not contain %q", enc, tt.wantText)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(d.Config().DataDir, experimentsDir, id)); !os.IsNotExist(err) {
		t.Fatalf("files of the deleted job still exist: %v", err)
	}
}

func TestAdminRefusesInvalidJobs(t *testing.T) {
	d := mustNew(t, testCfg(t, newFakeClock()))
	c, _ := mustServeAdmin(t, d, Config{})
	tests := []struct {
		name     string
		body     []byte
		wantInfo string
	}{
		{"rounds zero", zipWithManifest(t, `{"name":"x","min_envoys":1,"rounds":0,"train":{"command":["a"]}}`), "rounds"},
		{"no command", zipWithManifest(t, `{"name":"x","min_envoys":1,"rounds":1,"train":{"command":[]}}`), "train.command"},
		{"both envoys and min", zipWithManifest(t, `{"name":"x","envoys":["a"],"min_envoys":1,"rounds":1,"train":{"command":["a"]}}`), "envoys"},
		{"bad timeout", zipWithManifest(t, `{"name":"x","min_envoys":1,"rounds":1,"train":{"command":["a"],"timeout":"soon"}}`), "timeout"},
		{"not json", zipWithManifest(t, `{"name":`), "job.json"},
		{"not a zip", []byte("this is not a zip file at all"), "zip"},
		{"no model", zipWithManifest(t, testManifest), "model.safetensors"},
		{"garbage model", zipWithManifest(t, testManifest, "model.safetensors", "garbage"), "safetensors"},
		{"unknown envoy", zipWithManifest(t, `{"name":"x","envoys":["nobody"],"rounds":1,"train":{"command":["a"]}}`, "model.safetensors", string(testModel(t))), `"nobody"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reply := submit(t, c, tt.body)
			if reply.Status() != adminproto.StatusInvalidJobDef {
				t.Fatalf("status: got %s (%q), want invalid_job_def", reply.Status(), reply.Info())
			}
			if !strings.Contains(reply.Info(), tt.wantInfo) {
				t.Fatalf("info %q does not name %q", reply.Info(), tt.wantInfo)
			}
			assertNoUploadLeft(t, d)
		})
	}
}

// rawFrame encodes a binary exchange by hand so tests can corrupt it.
func rawFrame(meta, body []byte, crc uint32) []byte {
	var b bytes.Buffer
	b.WriteByte(adminproto.BinaryMarker)
	binary.Write(&b, binary.BigEndian, uint32(len(meta)))
	binary.Write(&b, binary.BigEndian, uint64(len(body)))
	b.Write(meta)
	b.Write(body)
	binary.Write(&b, binary.BigEndian, uint32(0))
	binary.Write(&b, binary.BigEndian, crc)
	return b.Bytes()
}

func TestAdminBrokenUploads(t *testing.T) {
	d := mustNew(t, testCfg(t, newFakeClock()))
	c, srv := mustServeAdmin(t, d, Config{IdleTimeout: 300 * time.Millisecond})
	meta, _ := adminproto.EncodeMessage(adminproto.NewRequest("submit_job"))
	body := zipOf(t, writeJobDir(t, testManifest))

	t.Run("checksum mismatch", func(t *testing.T) {
		conn, err := net.Dial("tcp", c.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.Write(rawFrame(meta, body, 0xdeadbeef))
		reply, err := adminproto.ReadMessage(conn, adminproto.MaxTextSize)
		if err != nil {
			t.Fatal(err)
		}
		if reply.Status() != adminproto.StatusError || !strings.Contains(reply.Info(), "checksum") {
			t.Fatalf("got %s %q, want an error naming the checksum", reply.Status(), reply.Info())
		}
		assertNoUploadLeft(t, d)
	})
	t.Run("truncated then closed", func(t *testing.T) {
		waitActive(t, srv, 0) // the last subtest's connection is counted
		before := srv.done.Load()
		conn, err := net.Dial("tcp", c.Addr)
		if err != nil {
			t.Fatal(err)
		}
		frame := rawFrame(meta, body, 0)
		conn.Write(frame[:len(frame)/2])
		conn.Close()
		eventuallyDir(t, d, srv, before)
	})
	t.Run("stalled mid-body", func(t *testing.T) {
		waitActive(t, srv, 0)
		before := srv.done.Load()
		conn, err := net.Dial("tcp", c.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		frame := rawFrame(meta, body, 0)
		conn.Write(frame[:len(frame)/2])
		// The idle timeout cuts the connection off; the reply may or may
		// not arrive, but the connection must end.
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(conn); err != nil {
			t.Fatalf("connection not closed by the idle timeout: %v", err)
		}
		eventuallyDir(t, d, srv, before)
	})
	t.Run("too large", func(t *testing.T) {
		small := testCfg(t, newFakeClock())
		small.MaxJobSize = 16
		d := mustNew(t, small)
		c, _ := mustServeAdmin(t, d, Config{})
		reply := submit(t, c, body)
		if reply.Status() != adminproto.StatusError || !strings.Contains(reply.Info(), "max-job-size") {
			t.Fatalf("got %s %q, want a refusal naming --max-job-size", reply.Status(), reply.Info())
		}
		assertNoUploadLeft(t, d)
	})
	t.Run("garbage text", func(t *testing.T) {
		conn, err := net.Dial("tcp", c.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.Write([]byte("XYZZY: not an admin request\x03\x04"))
		reply, err := adminproto.ReadMessage(conn, adminproto.MaxTextSize)
		if err != nil {
			t.Fatal(err)
		}
		if reply.Status() != adminproto.StatusSyntaxError {
			t.Fatalf("got %s %q, want syntax_error", reply.Status(), reply.Info())
		}
	})
	// The director still serves after all that.
	if reply := do(t, c, "check_status"); reply.Status() != adminproto.StatusOK {
		t.Fatalf("check_status after broken uploads: %s %q", reply.Status(), reply.Info())
	}
}

// eventuallyDir waits until the director has cleaned up an aborted upload.
func eventuallyDir(t *testing.T, d *director.Director, srv *Server, before int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		entries, _ := os.ReadDir(filepath.Join(d.Config().DataDir, tmpDir))
		if len(entries) == 0 && srv.done.Load() > before {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("temp files left after a broken upload: %d", len(entries))
		}
		time.Sleep(20 * time.Millisecond)
	}
	assertNoUploadLeft(t, d)
}

func TestAdminConnectionCap(t *testing.T) {
	d := mustNew(t, testCfg(t, newFakeClock()))
	c, srv := mustServeAdmin(t, d, Config{MaxConns: 1})
	hold, err := net.Dial("tcp", c.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	hold.Write([]byte(`{"data": [`)) // an unfinished request keeps the slot
	waitActive(t, srv, 1)
	deadline := time.Now().Add(5 * time.Second)
	for {
		reply := do(t, c, "check_status")
		if reply.Status() == adminproto.StatusError && strings.Contains(reply.Info(), "busy") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("second connection over a cap of 1: got %s %q, want busy", reply.Status(), reply.Info())
		}
		time.Sleep(10 * time.Millisecond)
	}
	hold.Close()
	deadline = time.Now().Add(5 * time.Second)
	for do(t, c, "check_status").Status() != adminproto.StatusOK {
		if time.Now().After(deadline) {
			t.Fatal("slot not freed after the holding connection closed")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestRemoveOrphansAtStart(t *testing.T) {
	clock := newFakeClock()
	cfg := testCfg(t, clock)
	d := mustNew(t, cfg)
	c, _ := mustServeAdmin(t, d, Config{})
	reply := submit(t, c, zipOf(t, writeJobDir(t, testManifest)))
	id, _ := reply.Meta["job_id"].(string)
	orphan := filepath.Join(cfg.DataDir, experimentsDir, "11111111-2222-4333-8444-555555555555")
	os.MkdirAll(orphan, 0o700)
	os.WriteFile(filepath.Join(orphan, archiveFile), []byte("x"), 0o600)
	os.MkdirAll(filepath.Join(cfg.DataDir, tmpDir), 0o700)
	os.WriteFile(filepath.Join(cfg.DataDir, tmpDir, "upload-1.zip"), []byte("x"), 0o600)

	d2, err := director.New(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer d2.Close()
	if _, err := os.Stat(orphan); !os.IsNotExist(err) {
		t.Fatalf("orphan experiment dir survived start-up: %v", err)
	}
	if entries, _ := os.ReadDir(filepath.Join(cfg.DataDir, tmpDir)); len(entries) != 0 {
		t.Fatalf("temp files survived start-up: %d", len(entries))
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, experimentsDir, id, archiveFile)); err != nil {
		t.Fatalf("a referenced archive was removed: %v", err)
	}
}
