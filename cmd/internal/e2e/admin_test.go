package e2e

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedplane/fedplane/tensor"
)

// writeJob writes a job folder and returns its path.
func writeJob(tb testing.TB, manifest string) string {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), "job")
	os.MkdirAll(dir, 0o755)
	for name, body := range map[string]string{
		"job.json":          manifest,
		"model.safetensors": string(smallModel(tb)),
		"train.sh":          "#!/bin/sh\nexit 0\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	return dir
}

// smallModel is a small float32 model in safetensors form.
func smallModel(tb testing.TB) []byte {
	tb.Helper()
	var buf bytes.Buffer
	err := tensor.WriteFloat32Safetensors(&buf,
		map[string][]float32{"w": {1, 2, 3, 4}, "b": {0.5}},
		map[string][]int64{"w": {2, 2}, "b": {1}})
	if err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

const e2eManifest = `{"name": "e2e-job", "min_envoys": 1, "rounds": 1, "train": {"command": ["sh", "train.sh"], "timeout": "1m"}}`

// jobDirs lists the director's stored experiment dirs and temp files.
func jobDirs(tb testing.TB, dataDir string) (experiments, temps int) {
	e, _ := os.ReadDir(filepath.Join(dataDir, "experiments"))
	t, _ := os.ReadDir(filepath.Join(dataDir, "tmp"))
	return len(e), len(t)
}

func TestAdminJobLifecycle(t *testing.T) {
	d := startDirectorAdmin(t, t.TempDir())

	out := mustFladmin(t, d.admin, "submit-job", writeJob(t, e2eManifest))
	if !strings.HasPrefix(out, "Submitted job ") {
		t.Fatalf("submit-job printed %q", out)
	}
	id := strings.TrimSpace(strings.TrimPrefix(out, "Submitted job "))

	var submitted struct {
		JobID string `json:"job_id"`
	}
	if err := json.Unmarshal([]byte(mustFladmin(t, d.admin, "-o", "json", "submit-job", writeJob(t, e2eManifest))), &submitted); err != nil || len(submitted.JobID) != 36 {
		t.Fatalf("submit-job -o json: %v %+v", err, submitted)
	}

	list := mustFladmin(t, d.admin, "list-jobs")
	for _, want := range []string{"JOB ID", id, submitted.JobID, "e2e-job", "pending"} {
		if !strings.Contains(list, want) {
			t.Fatalf("list-jobs output lacks %q:\n%s", want, list)
		}
	}
	var jobs []map[string]any
	if err := json.Unmarshal([]byte(mustFladmin(t, d.admin, "list-jobs", "-o", "json", "-m", "1")), &jobs); err != nil {
		t.Fatal(err)
	}
	if len(jobs) != 1 || jobs[0]["job_id"] != submitted.JobID || jobs[0]["status"] != "pending" {
		t.Fatalf("list-jobs -o json -m 1: got %v", jobs)
	}

	show := mustFladmin(t, d.admin, "show-job", id[:8])
	for _, want := range []string{id, "pending", `"min_envoys": 1`} {
		if !strings.Contains(show, want) {
			t.Fatalf("show-job output lacks %q:\n%s", want, show)
		}
	}
	mustFladmin(t, d.admin, "abort-job", id)
	if r := fladmin(t, d.admin, "abort-job", id); r.code != 1 || !strings.Contains(r.stderr, id+" is aborted") {
		t.Fatalf("second abort: exit %d, stderr %q", r.code, r.stderr)
	}
	mustFladmin(t, d.admin, "delete-job", id)
	if r := fladmin(t, d.admin, "show-job", id); r.code != 1 || !strings.Contains(r.stderr, "no job") {
		t.Fatalf("show of a deleted job: exit %d, stderr %q", r.code, r.stderr)
	}
	if n, _ := jobDirs(t, d.dataDir); n != 1 {
		t.Fatalf("experiment dirs after delete: got %d, want 1", n)
	}

	status := mustFladmin(t, d.admin, "status")
	if !strings.Contains(status, "pending 1") {
		t.Fatalf("status: %s", status)
	}
	envoys := mustFladmin(t, d.admin, "list-envoys")
	if !strings.Contains(envoys, "No envoys") {
		t.Fatalf("list-envoys: %s", envoys)
	}
}

func TestFladminErrors(t *testing.T) {
	d := startDirectorAdmin(t, t.TempDir())
	bad := writeJob(t, `{"name": "x", "rounds": 1, "train": {"command": ["a"]}}`)
	tests := []struct {
		name     string
		addr     string
		args     []string
		wantCode int
		wantErr  string
	}{
		{"missing folder", d.admin, []string{"submit-job", "/nonexistent/job"}, 1, "/nonexistent/job"},
		{"bad job.json", d.admin, []string{"submit-job", bad}, 1, "envoys"},
		{"refused connection", "127.0.0.1:1", []string{"list-jobs"}, 1, "127.0.0.1:1"},
		{"unknown job", d.admin, []string{"show-job", "abcdef12"}, 1, "no job"},
		{"short id", d.admin, []string{"abort-job", "abc"}, 2, "too short"},
		{"no args", d.admin, []string{"show-job"}, 2, "arg"},
		{"bad output", d.admin, []string{"-o", "xml", "list-jobs"}, 2, "--output"},
		{"unknown command", d.admin, []string{"frobnicate"}, 2, "unknown command"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := fladmin(t, tt.addr, tt.args...)
			if r.code != tt.wantCode || !strings.Contains(r.stderr, tt.wantErr) {
				t.Fatalf("exit %d stderr %q; want exit %d naming %q", r.code, r.stderr, tt.wantCode, tt.wantErr)
			}
			if strings.Count(r.stderr, "Error:") != 1 {
				t.Fatalf("error printed %d times: %q", strings.Count(r.stderr, "Error:"), r.stderr)
			}
		})
	}
	if n, _ := jobDirs(t, d.dataDir); n != 0 {
		t.Fatalf("refused jobs left %d experiment dirs", n)
	}
}

// frame encodes a binary exchange by hand, so the test can corrupt it.
func frame(meta, body []byte, crc uint32) []byte {
	var b bytes.Buffer
	b.WriteByte(0x01)
	binary.Write(&b, binary.BigEndian, uint32(len(meta)))
	binary.Write(&b, binary.BigEndian, uint64(len(body)))
	b.Write(meta)
	b.Write(body)
	binary.Write(&b, binary.BigEndian, uint32(0))
	binary.Write(&b, binary.BigEndian, crc)
	return b.Bytes()
}

func TestBrokenUploadsLeaveNothing(t *testing.T) {
	d := startDirectorAdmin(t, t.TempDir(), "--admin-idle-timeout", "500ms")
	meta := []byte(`{"time": "", "data": [{"type": "command", "data": "submit_job"}], "meta": {}}`)
	body := bytes.Repeat([]byte("PK not really a zip "), 50000)

	// A corrupt checksum: refused with a reply that says so.
	conn, err := net.Dial("tcp", d.admin)
	if err != nil {
		t.Fatal(err)
	}
	conn.Write(frame(meta, body, 12345))
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var reply bytes.Buffer
	reply.ReadFrom(conn)
	conn.Close()
	if !strings.Contains(reply.String(), "checksum") {
		t.Fatalf("reply to a corrupt checksum: %q", reply.String())
	}

	// A truncated upload whose client goes away.
	conn, err = net.Dial("tcp", d.admin)
	if err != nil {
		t.Fatal(err)
	}
	f := frame(meta, body, 0)
	conn.Write(f[:len(f)/3])
	conn.Close()

	eventually(t, 10*time.Second, "no temp file left", func() bool {
		_, temps := jobDirs(t, d.dataDir)
		return temps == 0
	})
	if n, _ := jobDirs(t, d.dataDir); n != 0 {
		t.Fatalf("broken uploads left %d experiment dirs", n)
	}
	var jobs []any
	json.Unmarshal([]byte(mustFladmin(t, d.admin, "list-jobs", "-o", "json")), &jobs)
	if len(jobs) != 0 {
		t.Fatalf("broken uploads created jobs: %v", jobs)
	}
	// Still serving: a good job goes through.
	mustFladmin(t, d.admin, "submit-job", writeJob(t, e2eManifest))
}
