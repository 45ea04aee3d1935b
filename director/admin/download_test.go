package admin

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/pki"
	"github.com/fedplane/fedplane/pki/pkitest"
)

var tx0 = strings.Repeat("0", 2*txIDBytes)

func TestParseFileArgs(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		want    fileArgs
		wantErr string
	}{
		{name: "file", args: []string{tx0, "job1", "job.json"}, want: fileArgs{txID: tx0, folder: "job1", file: "job.json"}},
		{name: "last file", args: []string{tx0, "job1", "models/last.safetensors", "end"}, want: fileArgs{txID: tx0, folder: "job1", file: "models/last.safetensors", end: true}},
		{name: "too few", args: []string{tx0, "job1"}, wantErr: "2 arguments"},
		{name: "not end", args: []string{tx0, "job1", "job.json", "stop"}, wantErr: `"stop"`},
		{name: "short tx", args: []string{"abc", "job1", "job.json"}, wantErr: "tx_id"},
		{name: "upper tx", args: []string{strings.ToUpper(strings.Repeat("ab", txIDBytes)), "job1", "job.json"}, wantErr: "tx_id"},
		{name: "parent", args: []string{tx0, "job1", "../secret"}, wantErr: "not a relative path"},
		{name: "absolute", args: []string{tx0, "job1", "/etc/passwd"}, wantErr: "not a relative path"},
		{name: "dot", args: []string{tx0, "job1", "."}, wantErr: "not a relative path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseFileArgs(tt.args)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want an error saying %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v, want %+v", got, err, tt.want)
			}
		})
	}
}

func FuzzParseFileArgs(f *testing.F) {
	f.Add(tx0, "job1", "job.json", "end")
	f.Add(tx0, "job1", "../x", "")
	f.Add("zz", "", "/", "stop")
	f.Fuzz(func(t *testing.T, tx, folder, file, end string) {
		args := []string{tx, folder, file}
		if end != "" {
			args = append(args, end)
		}
		a, err := parseFileArgs(args)
		if err != nil {
			return
		}
		if strings.HasPrefix(a.file, "/") || strings.Contains("/"+a.file+"/", "/../") || len(a.txID) != 2*txIDBytes {
			t.Fatalf("parseFileArgs(%q) accepted %+v", args, a)
		}
	})
}

// TestDownloadTransactions: a transaction serves only its listed files,
// only to its caller, and ends with "end" or when it expires; its folder
// goes with it.
func TestDownloadTransactions(t *testing.T) {
	p := pkitest.New(t)
	p.Admin("alice", pki.RoleProjectAdmin)
	p.Admin("bob", pki.RoleProjectAdmin)
	clock := newFakeClock()
	d := mustNew(t, testCfg(t, clock))
	c, srv := mustServeAdmin(t, d, Config{TLS: p.ServerTLS()})
	as := func(name string) *flareClient {
		cfg := p.ClientTLS(name)
		cfg.NextProtos = nil
		return &flareClient{tb: t, addr: c.Addr, cfg: cfg}
	}
	alice := as("alice")
	sub := flareParse(t, alice.exchange(flareBinary(flareRequest("job_mgmt.submit_job hello", ""), flareJobZip(t, "hello", nil))))
	id := meta(sub)[api.MetaJobID].(string)
	open := func() (tx, dir string) {
		m := meta(flareParse(t, alice.exchange(flareText(flareRequest("job_mgmt.download_job "+id, "")))))
		tx = m[api.MetaTxID].(string)
		srv.downloads.mu.Lock()
		dir = srv.downloads.byID[tx].dir
		srv.downloads.mu.Unlock()
		return tx, dir
	}
	fetch := func(who *flareClient, args string) string {
		raw := who.exchange(flareText(flareRequest("download_job_file "+args, "")))
		if len(raw) > 0 && raw[0] == 1 {
			return adminproto.StatusOK
		}
		return meta(flareParse(t, raw))["status"].(string)
	}

	tx, dir := open()
	// A file beside the results, which no name of the list reaches.
	os.WriteFile(filepath.Join(filepath.Dir(dir), "outside"), []byte("secret"), 0o600)
	tests := []struct {
		name, args string
		who        *flareClient
		want       string
	}{
		{name: "listed file", who: alice, args: tx + " " + id + " status.json", want: adminproto.StatusOK},
		{name: "file in a folder", who: alice, args: tx + " " + id + " models/last.safetensors", want: adminproto.StatusOK},
		{name: "unlisted file", who: alice, args: tx + " " + id + " ../outside", want: adminproto.StatusSyntaxError},
		{name: "another caller", who: as("bob"), args: tx + " " + id + " job.json", want: adminproto.StatusInvalidJobID},
		{name: "another folder", who: alice, args: tx + " other " + "job.json", want: adminproto.StatusSyntaxError},
		{name: "last file", who: alice, args: tx + " " + id + " job.json end", want: adminproto.StatusOK},
		{name: "after end", who: alice, args: tx + " " + id + " job.json", want: adminproto.StatusInvalidJobID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := fetch(tt.who, tt.args); got != tt.want {
				t.Fatalf("got %s, want %s", got, tt.want)
			}
		})
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("results folder after end: %v, want it removed", err)
	}

	t.Run("expired", func(t *testing.T) {
		tx, dir := open()
		clock.Add(DefaultDownloadTTL)
		if got := fetch(alice, tx+" "+id+" job.json"); got != adminproto.StatusInvalidJobID {
			t.Fatalf("got %s, want %s", got, adminproto.StatusInvalidJobID)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("results folder after expiry: %v, want it removed", err)
		}
	})
	t.Run("swept unused", func(t *testing.T) {
		// Nobody downloads again: the sweep alone removes the folder.
		_, dir := open()
		clock.Add(DefaultDownloadTTL)
		srv.downloads.sweep()
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("results folder after the sweep: %v, want it removed", err)
		}
	})
	t.Run("per caller cap", func(t *testing.T) {
		for range DefaultDownloadsPerCaller {
			open()
		}
		m := meta(flareParse(t, alice.exchange(flareText(flareRequest("download_job "+id, "")))))
		if m["status"] != adminproto.StatusError || !strings.Contains(m["info"].(string), "downloads of yours are open") {
			t.Fatalf("download past the cap: %v", m)
		}
		clock.Add(time.Hour)
	})
	t.Run("job deleted", func(t *testing.T) {
		tx, dir := open()
		if st := meta(flareParse(t, alice.exchange(flareText(flareRequest("job_mgmt.delete_job "+id, ""))))); st["status"] != adminproto.StatusOK {
			t.Fatalf("delete_job: %v", st)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			t.Errorf("results folder of a deleted job: %v, want it removed", err)
		}
		if got := fetch(alice, tx+" "+id+" job.json"); got != adminproto.StatusInvalidJobID {
			t.Fatalf("a deleted job's download: got %s, want %s", got, adminproto.StatusInvalidJobID)
		}
	})
}
