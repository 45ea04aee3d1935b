package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/cmd/internal/cli"
)

// fakeAdmin answers every admin request with reply and records the command.
// The real director is exercised by cmd/internal/e2e; this tests fladmin's
// side: what it sends for its flags and how it prints replies.
type fakeAdmin struct {
	addr  string
	mu    sync.Mutex
	got   []string
	bytes int64
	// reply is the document every request gets, encoded once, unless
	// seq is set: then each request gets the next of seq, and the last one
	// from then on.
	reply []byte
	seq   [][]byte
}

func startFakeAdmin(t testing.TB, reply *adminproto.Message) *fakeAdmin {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	doc, err := adminproto.EncodeMessage(reply)
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeAdmin{addr: lis.Addr().String(), reply: doc}
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go f.serve(c)
		}
	}()
	t.Cleanup(func() { lis.Close() })
	return f
}

func (f *fakeAdmin) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	kind, err := adminproto.PeekKind(br)
	if err != nil {
		return
	}
	var req *adminproto.Message
	var n int64
	if kind == adminproto.KindBinary {
		b, err := adminproto.ReadBinary(br, 1<<30)
		if err != nil {
			return
		}
		if n, err = b.CopyBody(&bytes.Buffer{}); err != nil {
			return
		}
		req, _ = adminproto.DecodeMessage(b.Meta)
	} else if req, err = adminproto.ReadMessage(br, adminproto.MaxTextSize); err != nil {
		return
	}
	cmd, _ := req.Command()
	f.mu.Lock()
	f.got = append(f.got, cmd)
	f.bytes += n
	reply := f.reply
	if len(f.seq) > 0 {
		reply = f.seq[0]
		if len(f.seq) > 1 {
			f.seq = f.seq[1:]
		}
	}
	f.mu.Unlock()
	adminproto.WriteText(c, reply)
}

func ok(meta map[string]any) *adminproto.Message {
	meta["status"] = adminproto.StatusOK
	return &adminproto.Message{Meta: meta}
}

var sampleJob = map[string]any{
	"job_id": "0b5a6a7e-1111-4222-8333-444455556666", "name": "mnist", "status": "pending",
	"submitter": "alice", "submitTime": "2026-01-02T03:04:05Z", "duration": "-",
	"manifest": map[string]any{"name": "mnist", "rounds": 3},
}

func runFladmin(t testing.TB, addr string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	f := newFactory()
	var out, errb bytes.Buffer
	f.stdout, f.stderr = &out, &errb
	f.stderrIsTerminal = func() bool { return false }
	f.user = func() string { return "tester" }
	code = cli.Main(newRootCmd(f), append([]string{"--addr", addr, "--timeout", "5s"}, args...), &errb)
	return out.String(), errb.String(), code
}

func TestCommands(t *testing.T) {
	jobDir := t.TempDir()
	os.WriteFile(filepath.Join(jobDir, "job.json"), []byte(`{"name":"mnist","min_envoys":1,"rounds":1,"train":{"command":["true"]}}`), 0o644)
	tests := []struct {
		name       string
		args       []string
		reply      *adminproto.Message
		wantSent   string
		wantOut    []string
		wantCode   int
		wantStderr string
	}{
		{name: "list-jobs flags", args: []string{"list-jobs", "-n", "mn", "-m", "5", "-r"},
			reply: ok(map[string]any{"jobs": []any{sampleJob}}), wantSent: "list_jobs -n mn -m 5 -r",
			wantOut: []string{"JOB ID", "0b5a6a7e-1111-4222-8333-444455556666", "mnist", "pending", "alice"}},
		{name: "list-jobs json", args: []string{"-o", "json", "list-jobs"},
			reply: ok(map[string]any{"jobs": []any{sampleJob}}), wantSent: "list_jobs",
			wantOut: []string{`"job_id": "0b5a6a7e-1111-4222-8333-444455556666"`}},
		{name: "list-jobs empty", args: []string{"list-jobs"}, reply: ok(map[string]any{"jobs": []any{}}), wantSent: "list_jobs", wantOut: []string{"No jobs."}},
		{name: "show-job", args: []string{"show-job", "0b5a6a7e"}, reply: ok(map[string]any{"job": sampleJob}),
			wantSent: "get_job_meta 0b5a6a7e", wantOut: []string{"Job ID:", "Status:", "pending", `"rounds": 3`}},
		{name: "show-job storage", args: []string{"show-job", "0b5a6a7e"},
			reply: ok(map[string]any{"job": map[string]any{"job_id": "0b5a6a7e-1111-4222-8333-444455556666", "status": "finished",
				"storage": map[string]any{"bytes": 3<<20 + 10<<10, "archiveBytes": 10 << 10, "models": 2, "modelBytes": 2 << 20, "stateBytes": 1 << 20, "keepModels": "best", "keepIsDefault": true}}}),
			wantSent: "get_job_meta 0b5a6a7e", wantOut: []string{"Stored:", "3.0 MiB (archive 10.0 KiB, 2 models 2.0 MiB, server state 1.0 MiB)",
				"Retention:", `keep_models "best": the best model and the newest (default)`}},
		{name: "abort-job", args: []string{"abort-job", "0b5a6a7e"}, reply: ok(map[string]any{"job": sampleJob}),
			wantSent: "abort_job 0b5a6a7e", wantOut: []string{"Aborted job 0b5a6a7e-1111-4222-8333-444455556666"}},
		{name: "delete-job", args: []string{"delete-job", "0b5a6a7e"}, reply: ok(map[string]any{"job_id": sampleJob["job_id"]}),
			wantSent: "delete_job 0b5a6a7e", wantOut: []string{"Deleted job"}},
		{name: "list-envoys", args: []string{"list-envoys"},
			reply:    ok(map[string]any{"envoys": []any{map[string]any{"name": "site-a", "online": true, "lastSeen": "2026-01-02T03:04:05Z", "samples": 42, "shard": "hospital A"}}}),
			wantSent: "list_envoys -m 10000", wantOut: []string{"NAME", "ONLINE", "site-a", "yes", "42", "hospital A"}},
		{name: "remove-envoy", args: []string{"remove-envoy", "site-a"}, reply: ok(map[string]any{"envoy": "site-a"}),
			wantSent: "remove_envoy site-a", wantOut: []string{"Removed envoy site-a"}},
		{name: "remove-envoy refused", args: []string{"remove-envoy", "site-a"},
			reply:    &adminproto.Message{Meta: map[string]any{"status": "not_authorized", "info": "lead1 is a lead: remove_envoy needs the project_admin role"}},
			wantSent: "remove_envoy site-a", wantCode: 1, wantStderr: "director refused (not_authorized): lead1 is a lead"},
		{name: "remove-envoy bad name", args: []string{"remove-envoy", "a b"}, reply: ok(map[string]any{}), wantCode: 2, wantStderr: "NAME"},
		{name: "status", args: []string{"status"},
			reply:    ok(map[string]any{"version": "v1", "uptime": "5s", "envoys": 2, "envoysOnline": 1, "jobs": map[string]any{"pending": 3}}),
			wantSent: "check_status", wantOut: []string{"v1", "2 registered, 1 online", "pending 3"}},
		{name: "submit-job", args: []string{"submit-job", jobDir}, reply: ok(map[string]any{"job_id": "0b5a6a7e-1111-4222-8333-444455556666"}),
			wantSent: "submit_job", wantOut: []string{"Submitted job 0b5a6a7e-1111-4222-8333-444455556666"}},
		{name: "refusal", args: []string{"show-job", "0b5a6a7e"},
			reply:    &adminproto.Message{Meta: map[string]any{"status": "invalid_job_id", "info": "no job with id \"0b5a6a7e\""}},
			wantSent: "get_job_meta 0b5a6a7e", wantCode: 1, wantStderr: `director refused (invalid_job_id): no job with id "0b5a6a7e"`},
		{name: "usage", args: []string{"show-job"}, reply: ok(map[string]any{}), wantCode: 2, wantStderr: "accepts 1 arg"},
		{name: "bad max", args: []string{"list-jobs", "-m", "-1"}, reply: ok(map[string]any{}), wantCode: 2, wantStderr: "--max"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startFakeAdmin(t, tt.reply)
			out, stderr, code := runFladmin(t, srv.addr, tt.args...)
			if code != tt.wantCode {
				t.Fatalf("exit: got %d, want %d; stderr %q", code, tt.wantCode, stderr)
			}
			if !strings.Contains(stderr, tt.wantStderr) {
				t.Fatalf("stderr %q lacks %q", stderr, tt.wantStderr)
			}
			srv.mu.Lock()
			got := strings.Join(srv.got, "|")
			srv.mu.Unlock()
			if got != tt.wantSent {
				t.Fatalf("sent: got %q, want %q", got, tt.wantSent)
			}
			for _, w := range tt.wantOut {
				if !strings.Contains(out, w) {
					t.Fatalf("stdout lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

// TestProgressBar runs in a synctest bubble, whose clock moves only when
// every goroutine in it waits: the sleeps take no real time, and the rates
// drawn are exact.
func TestProgressBar(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var buf bytes.Buffer
		p := newProgress(&buf, "Uploading", 4<<20)
		mib := make([]byte, 1<<20)
		p.Write(mib) // drawn: the first write
		time.Sleep(50 * time.Millisecond)
		p.Write(mib) // not drawn: 50ms after the last drawing
		time.Sleep(50 * time.Millisecond)
		p.Write(mib) // drawn: 100ms after it
		time.Sleep(100 * time.Millisecond)
		p.Write(mib) // drawn: the last bytes
		p.done()     // drawn again, ending the line
		out := buf.String()
		frames := strings.Split(out, "\r")[1:]
		want := []string{
			"1.0 MiB / 4.0 MiB  1000.0 MiB/s", // at 0s: over the rate's floor of 1ms
			"3.0 MiB / 4.0 MiB  30.0 MiB/s",
			"4.0 MiB / 4.0 MiB  20.0 MiB/s",
			"4.0 MiB / 4.0 MiB  20.0 MiB/s",
		}
		if len(frames) != len(want) {
			t.Fatalf("got %d frames, want %d: %q", len(frames), len(want), out)
		}
		for i, w := range want {
			if !strings.Contains(frames[i], w) {
				t.Errorf("frame %d: got %q, want it to hold %q", i, frames[i], w)
			}
		}
		if last := frames[len(frames)-1]; !strings.Contains(last, "100%") || !strings.HasSuffix(last, "\n") {
			t.Fatalf("last frame %q: want 100%% and a newline", last)
		}
	})
}

func TestHelpDoesNotDial(t *testing.T) {
	_, _, code := runFladmin(t, "127.0.0.1:1", "list-jobs", "--help")
	if code != 0 {
		t.Fatalf("--help exit %d", code)
	}

}

// TestPrintList checks -o json of the list commands, which stream the list:
// the output is what indenting the whole list gives, and broken lists are
// errors that name the key.
func TestPrintList(t *testing.T) {
	two := []any{map[string]any{"name": "a", "shape": []any{"28", "28"}}, map[string]any{"name": "b<", "n": 1.5}}
	want, _ := json.MarshalIndent(two, "", "  ")
	tests := []struct {
		name    string
		meta    map[string]any
		want    string
		wantErr string
	}{
		{name: "two", meta: map[string]any{"envoys": two}, want: string(want) + "\n"},
		{name: "empty", meta: map[string]any{"envoys": []any{}}, want: "[]\n"},
		{name: "null", meta: map[string]any{"envoys": nil}, want: "[]\n"},
		{name: "missing", meta: map[string]any{}, wantErr: `reply meta has no "envoys"`},
		{name: "not a list", meta: map[string]any{"envoys": "x"}, wantErr: `meta "envoys": not a list`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startFakeAdmin(t, ok(tt.meta))
			out, stderr, code := runFladmin(t, srv.addr, "-o", "json", "list-envoys")
			if tt.wantErr != "" {
				if code != 1 || !strings.Contains(stderr, tt.wantErr) {
					t.Fatalf("exit %d, stderr %q; want 1 and %q", code, stderr, tt.wantErr)
				}
				return
			}
			if code != 0 || out != tt.want {
				t.Fatalf("exit %d, stderr %q, stdout\n%s\nwant\n%s", code, stderr, out, tt.want)
			}
		})
	}
}
