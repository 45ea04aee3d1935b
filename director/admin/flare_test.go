package admin

import (
	"archive/zip"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/pki"
	"github.com/fedplane/fedplane/pki/pkitest"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/flare")

// This file plays FLARE 2.6.3's admin client (nvflare/fuel/hci/client
// api.py, conn.py, file_transfer.py, binary_proto.py) against the server,
// byte for byte: each request as that client frames it, each reply parsed
// as it parses it. The golden files under testdata/flare hold both, with
// the values that change per run (job id, token, transaction id) as
// placeholders.

// flareTime is the "time" FLARE's client writes: Python's
// format(datetime.now()).
const flareTime = "2026-03-04 05:06:07.000000"

// flareRequest is a request envelope as FLARE's Buffer.encode writes it:
// json.dumps of {time, data, meta}, with Python's ", " and ": "
// separators; the command item first, then the token item if logged in.
func flareRequest(command, token string) string {
	data := fmt.Sprintf(`{"type": "command", "data": %q}`, command)
	if token != "" {
		data += fmt.Sprintf(`, {"type": "token", "data": %q}`, token)
	}
	return fmt.Sprintf(`{"time": %q, "data": [%s], "meta": {}}`, flareTime, data)
}

// flareText frames a text request as Connection.close sends it: the line,
// ETX, then EOT alone.
func flareText(envelope string) []byte { return []byte(envelope + "\x03" + "\x04") }

// flareBinary frames a request as binary_proto.send_binary_file does:
// marker 1, meta size (uint32 BE), body size (uint64 BE), meta, body, end
// marker 0 (uint32), CRC-32 of the body (uint32 BE).
func flareBinary(meta string, body []byte) []byte {
	var b bytes.Buffer
	b.WriteByte(1)
	binary.Write(&b, binary.BigEndian, uint32(len(meta)))
	binary.Write(&b, binary.BigEndian, uint64(len(body)))
	b.WriteString(meta)
	b.Write(body)
	binary.Write(&b, binary.BigEndian, uint32(0))
	binary.Write(&b, binary.BigEndian, crc32.ChecksumIEEE(body))
	return b.Bytes()
}

// flareParse reads a text reply as conn.receive_and_process does: text up
// to EOT, split at ETX, each non-empty line a JSON document that
// proto.validate_proto accepts.
func flareParse(tb testing.TB, raw []byte) []map[string]any {
	tb.Helper()
	text, _, ok := strings.Cut(string(raw), "\x04")
	if !ok {
		tb.Fatalf("reply has no EOT: %q", raw)
	}
	var docs []map[string]any
	for line := range strings.SplitSeq(text, "\x03") {
		if line == "" {
			continue
		}
		var doc map[string]any
		if err := json.Unmarshal([]byte(line), &doc); err != nil {
			tb.Fatalf("reply line %q: %v", line, err)
		}
		data, ok := doc["data"].([]any)
		if !ok {
			tb.Fatalf("reply %q: data is not a list", line)
		}
		for _, it := range data {
			item, _ := it.(map[string]any)
			switch item["type"] {
			case "string", "success", "error", "dict", "command", "token", "shutdown":
				switch item["data"].(type) {
				case string, map[string]any:
				default:
					tb.Fatalf("reply %q: item %v: data must be a string or dict", line, item)
				}
			case "table":
				rows, ok := item["rows"].([]any)
				if !ok {
					tb.Fatalf("reply %q: table without rows", line)
				}
				for _, r := range rows {
					if _, ok := r.([]any); !ok {
						tb.Fatalf("reply %q: table row %v is not a list", line, r)
					}
				}
			default:
				tb.Fatalf("reply %q: item type %v is not one FLARE's client knows", line, item["type"])
			}
		}
		docs = append(docs, doc)
	}
	return docs
}

// flareBinaryReply reads a binary reply as binary_proto.receive_all does,
// checking the end marker and checksum, and returns its meta and body.
func flareBinaryReply(tb testing.TB, raw []byte) (meta string, body []byte) {
	tb.Helper()
	if len(raw) < 13+8 || raw[0] != 1 {
		tb.Fatalf("reply is not a binary exchange: %q", raw)
	}
	metaSize := binary.BigEndian.Uint32(raw[1:5])
	bodySize := binary.BigEndian.Uint64(raw[5:13])
	if uint64(len(raw)) != 13+uint64(metaSize)+bodySize+8 {
		tb.Fatalf("binary reply of %d bytes, header says meta %d, body %d", len(raw), metaSize, bodySize)
	}
	meta = string(raw[13 : 13+metaSize])
	body = raw[13+metaSize : 13+uint64(metaSize)+bodySize]
	foot := raw[len(raw)-8:]
	if end := binary.BigEndian.Uint32(foot[:4]); end != 0 {
		tb.Fatalf("end marker %d, want 0", end)
	}
	if sum := binary.BigEndian.Uint32(foot[4:]); sum != crc32.ChecksumIEEE(body) {
		tb.Fatalf("checksum %08x, want %08x", sum, crc32.ChecksumIEEE(body))
	}
	return meta, body
}

// flareJobZip is a job folder as FLARE's push_folder zips it: every entry
// under the folder's name, with the signature files sign_folders leaves
// in each folder.
func flareJobZip(tb testing.TB, folder string, extra map[string]string) []byte {
	tb.Helper()
	files := map[string]string{"job.json": testManifest, "train.py": "print(1)\n", "model.safetensors": string(testModel(tb))}
	for n, b := range extra {
		files[n] = b
	}
	names := slices.Sorted(func(yield func(string) bool) {
		for n := range files {
			if !yield(n) {
				return
			}
		}
	})
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, n := range names {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: folder + "/" + n, Method: zip.Deflate, Modified: time.Date(2026, 1, 2, 3, 4, 6, 0, time.UTC)})
		if err != nil {
			tb.Fatal(err)
		}
		io.WriteString(w, files[n])
	}
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// flareClient dials the admin port as FLARE's client does: TLS 1.2 or
// later with the admin's certificate, no ALPN, one exchange per
// connection.
type flareClient struct {
	tb   testing.TB
	addr string
	cfg  *tls.Config
}

func (c *flareClient) exchange(req []byte) []byte {
	c.tb.Helper()
	conn, err := tls.Dial("tcp", c.addr, c.cfg)
	if err != nil {
		c.tb.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	if _, err := conn.Write(req); err != nil {
		c.tb.Fatal(err)
	}
	reply, err := io.ReadAll(conn)
	if err != nil {
		c.tb.Fatal(err)
	}
	return reply
}

// golden compares got with testdata/flare/name, or writes it with -update.
func golden(tb testing.TB, name string, got []byte) {
	tb.Helper()
	path := filepath.Join("testdata", "flare", name)
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			tb.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			tb.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		tb.Fatalf("%v (run go test -run %s -update to write it)", err, tb.Name())
	}
	if !bytes.Equal(got, want) {
		tb.Errorf("%s:\ngot  %s\nwant %s", path, got, want)
	}
}

// flareSession is what a FLARE session learns as it goes, to fill in the
// placeholders of the later requests and to hide them in replies.
type flareSession struct {
	token, jobID, txID string
	files              []string
}

func (s *flareSession) fill(text string) string {
	return strings.NewReplacer("<token>", s.token, "<job_id>", s.jobID, "<tx_id>", s.txID).Replace(text)
}

func (s *flareSession) hide(text string) string {
	var pairs []string
	for _, p := range [][2]string{{s.token, "<token>"}, {s.jobID, "<job_id>"}, {s.txID, "<tx_id>"}} {
		if p[0] != "" {
			pairs = append(pairs, p[0], p[1])
		}
	}
	return strings.NewReplacer(pairs...).Replace(text)
}

// normalize is a parsed reply as the golden file holds it: without the
// reply's time, indented, placeholders for the values of this run.
func (s *flareSession) normalize(tb testing.TB, docs []map[string]any) []byte {
	tb.Helper()
	for _, d := range docs {
		delete(d, "time")
	}
	b, err := json.MarshalIndent(docs, "", "  ")
	if err != nil {
		tb.Fatal(err)
	}
	return append([]byte(s.hide(string(b))), '\n')
}

// meta is the meta of a reply's first document, as FLARE's client keeps it.
func meta(docs []map[string]any) map[string]any {
	m, _ := docs[0]["meta"].(map[string]any)
	return m
}

// items are the data items of a reply's first document.
func items(docs []map[string]any) []map[string]any {
	var out []map[string]any
	for _, it := range docs[0]["data"].([]any) {
		out = append(out, it.(map[string]any))
	}
	return out
}

// TestFlareAdminClient runs a FLARE 2.6.3 admin session against the admin
// port: login, command list, submit, list, get meta, the two-step
// download, abort, delete, session check and logout. Each step's request
// is a golden file (as FLARE's client sends it), and so is its reply (as
// FLARE's client parses it); check pins what FLARE's client reads.
func TestFlareAdminClient(t *testing.T) {
	p := pkitest.New(t)
	p.Admin("alice", pki.RoleProjectAdmin)
	d := mustNew(t, testCfg(t, newFakeClock()))
	c, _ := mustServeAdmin(t, d, Config{TLS: p.ServerTLS()})
	cfg := p.ClientTLS("alice")
	cfg.NextProtos = nil
	cfg.MinVersion = tls.VersionTLS12
	fc := &flareClient{tb: t, addr: c.Addr, cfg: cfg}
	s := &flareSession{}
	archive := flareJobZip(t, "hello-fedplane", map[string]string{".__nvfl_sig.json": "{}", ".__nvfl_submitter.crt": "not checked here\n"})

	steps := []struct {
		name string
		// binary: the request is a binary exchange whose body is the job
		// archive (submit_job).
		binary bool
		// binaryReply: the reply is a binary exchange (download_job_file).
		binaryReply bool
		check       func(t *testing.T, docs []map[string]any)
	}{
		{name: "cert_login", check: func(t *testing.T, docs []map[string]any) {
			it := items(docs)
			// _LoginReplyProcessor: a string item (login_result) and a token item.
			if len(it) != 2 || it[0]["type"] != "string" || it[0]["data"] != loginOK || it[1]["type"] != "token" {
				t.Fatalf("login reply items %v, want string OK and a token", it)
			}
			s.token = it[1]["data"].(string)
		}},
		{name: "commands", check: func(t *testing.T, docs []map[string]any) {
			rows := items(docs)[0]["rows"].([]any)
			header := fmt.Sprint(rows[0])
			if header != "[Scope Command Description Usage Confirm ClientCmd Visible]" {
				t.Fatalf("header %s", header)
			}
			found := map[string][]any{}
			for _, r := range rows[1:] {
				row := r.([]any)
				if len(row) != 7 {
					t.Fatalf("row %v: want 7 columns", row)
				}
				found[row[0].(string)+"."+row[1].(string)] = row
			}
			for name, client := range map[string]string{
				"job_mgmt.submit_job": flarePushFolder, "job_mgmt.download_job": flarePullFolder,
				"job_mgmt.download_job_file": flarePullBinary, "job_mgmt.list_jobs": "", "job_mgmt.get_job_meta": "",
				"job_mgmt.abort_job": "", "job_mgmt.delete_job": "", "training.check_status": "",
			} {
				row, ok := found[name]
				if !ok || row[5] != client {
					t.Errorf("command %s: row %v, want client command %q", name, row, client)
				}
			}
		}},
		{name: "submit_job", binary: true, check: func(t *testing.T, docs []map[string]any) {
			m := meta(docs)
			s.jobID, _ = m[api.MetaJobID].(string)
			if m["status"] != "ok" || s.jobID == "" {
				t.Fatalf("submit meta %v, want status ok and job_id", m)
			}
			if it := items(docs); it[0]["data"] != "Submitted job: "+s.jobID {
				t.Fatalf("submit items %v", it)
			}
		}},
		{name: "list_jobs", check: func(t *testing.T, docs []map[string]any) {
			jobs, _ := meta(docs)[api.MetaJobs].([]any)
			if len(jobs) != 1 {
				t.Fatalf("jobs %v", jobs)
			}
			j := jobs[0].(map[string]any)
			for _, k := range []string{"job_id", "job_name", "status", "submit_time", "duration"} {
				if _, ok := j[k]; !ok {
					t.Errorf("job %v has no %q", j, k)
				}
			}
		}},
		{name: "get_job_meta", check: func(t *testing.T, docs []map[string]any) {
			jm, _ := meta(docs)[api.MetaJobMeta].(map[string]any)
			if jm["job_id"] != s.jobID || jm["status"] != "SUBMITTED" {
				t.Fatalf("job_meta %v", jm)
			}
		}},
		{name: "download_job", check: func(t *testing.T, docs []map[string]any) {
			m := meta(docs)
			s.txID, _ = m[api.MetaTxID].(string)
			for _, f := range m[api.MetaFiles].([]any) {
				s.files = append(s.files, f.(string))
			}
			if m["status"] != "ok" || s.txID == "" || m[api.MetaCmdName] != api.CmdDownloadJobFile || m[api.MetaFolderName] != s.jobID || !slices.Contains(s.files, "job.json") {
				t.Fatalf("download meta %v", m)
			}
		}},
		{name: "download_job_file", binaryReply: true},
		{name: "download_job_file_ended", check: func(t *testing.T, docs []map[string]any) {
			// "end" on the last file ended the transaction.
			if st := meta(docs)["status"]; st != adminproto.StatusInvalidJobID {
				t.Fatalf("file of an ended download: status %v", st)
			}
		}},
		{name: "abort_job", check: func(t *testing.T, docs []map[string]any) {
			if st := meta(docs)["status"]; st != "ok" {
				t.Fatalf("abort status %v", st)
			}
		}},
		{name: "delete_job", check: func(t *testing.T, docs []map[string]any) {
			if st := meta(docs)["status"]; st != "ok" {
				t.Fatalf("delete status %v", st)
			}
		}},
		{name: "check_session", check: func(t *testing.T, docs []map[string]any) {
			if it := items(docs); it[0]["data"] != loginOK {
				t.Fatalf("check_session items %v", it)
			}
		}},
		{name: "logout"},
		{name: "check_session_after_logout", check: func(t *testing.T, docs []map[string]any) {
			// FLARE's client ends its session on an error saying session_inactive.
			if it := items(docs); it[0]["type"] != "error" || it[0]["data"] != sessionInactive {
				t.Fatalf("check_session after logout: items %v", it)
			}
		}},
		{name: "list_jobs_after_logout", check: func(t *testing.T, docs []map[string]any) {
			if st := meta(docs)["status"]; st != adminproto.StatusNotAuthenticated {
				t.Fatalf("stale token: status %v", st)
			}
		}},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			reqFile := filepath.Join("testdata", "flare", st.name+".req")
			tmpl, err := os.ReadFile(reqFile)
			if err != nil {
				t.Fatal(err)
			}
			envelope := s.fill(strings.TrimSuffix(string(tmpl), "\n"))
			var req []byte
			if st.binary {
				req = flareBinary(envelope, archive)
			} else {
				req = flareText(envelope)
			}
			raw := fc.exchange(req)
			if st.binaryReply {
				m, body := flareBinaryReply(t, raw)
				if m != "" {
					t.Errorf("binary reply meta %q, want none", m)
				}
				golden(t, st.name+".reply.hex", []byte(hex.Dump(raw)))
				if !json.Valid(body) {
					t.Errorf("job.json downloaded is not JSON: %q", body)
				}
				return
			}
			docs := flareParse(t, raw)
			if len(docs) == 0 {
				t.Fatalf("no reply document in %q", raw)
			}
			if st.check != nil {
				st.check(t, docs)
			}
			golden(t, st.name+".reply.json", s.normalize(t, docs))
		})
	}
}
