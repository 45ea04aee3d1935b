package pki_test

import (
	"crypto/tls"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/pki"
	"github.com/fedplane/fedplane/pki/pkitest"
)

// TestWriteFlareAdminKit writes FLARE 2.6's admin startup kit and reads it
// back the way FLARE's client does: fed_admin.json's admin section names
// the files in startup/ and the director in its overseer agent's
// sp_end_point (host:fl_port:admin_port).
func TestWriteFlareAdminKit(t *testing.T) {
	p := pkitest.New(t)
	p.Issue(pki.IssueOptions{Kind: pki.KindAdmin, Name: "carol", Role: pki.RoleLead, KeyType: pki.KeyRSA})
	kit := filepath.Join(t.TempDir(), "carol")
	o := pki.FlareKitOptions{Name: "carol", AdminHost: "fl.example.org", AdminPort: 8003, FLPort: 50051}
	if err := pki.WriteFlareAdminKit(p.Dir, kit, o); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(kit, "startup", "fed_admin.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Admin struct {
			WithSSL       bool   `json:"with_ssl"`
			CredType      string `json:"cred_type"`
			ClientCert    string `json:"client_cert"`
			ClientKey     string `json:"client_key"`
			CACert        string `json:"ca_cert"`
			UploadDir     string `json:"upload_dir"`
			DownloadDir   string `json:"download_dir"`
			OverseerAgent struct {
				Path string            `json:"path"`
				Args map[string]string `json:"args"`
			} `json:"overseer_agent"`
		} `json:"admin"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	a := cfg.Admin
	if !a.WithSSL || a.CredType != "cert" || a.UploadDir != "transfer" || a.DownloadDir != "transfer" ||
		a.OverseerAgent.Path != "nvflare.ha.dummy_overseer_agent.DummyOverseerAgent" ||
		a.OverseerAgent.Args["sp_end_point"] != "fl.example.org:50051:8003" {
		t.Fatalf("fed_admin.json: %s", b)
	}
	startup := filepath.Join(kit, "startup")
	if _, err := tls.LoadX509KeyPair(filepath.Join(startup, a.ClientCert), filepath.Join(startup, a.ClientKey)); err != nil {
		t.Fatalf("the kit's certificate and key: %v", err)
	}
	ca, _, _ := p.Files("carol")
	want, _ := os.ReadFile(ca)
	if got, _ := os.ReadFile(filepath.Join(startup, a.CACert)); string(got) != string(want) {
		t.Fatal("rootCA.pem is not the federation's CA")
	}
	if st, err := os.Stat(filepath.Join(startup, a.ClientKey)); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("client.key: %v %v, want mode 0600", st.Mode(), err)
	}
	if st, err := os.Stat(filepath.Join(kit, "transfer")); err != nil || !st.IsDir() {
		t.Fatalf("transfer/: %v", err)
	}
	if err := pki.WriteFlareAdminKit(p.Dir, kit, o); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second kit in the same place: got %v, want it refused", err)
	}
}

func TestCheckFlareKit(t *testing.T) {
	ok := pki.FlareKitOptions{Name: "carol", AdminHost: "10.0.0.7", AdminPort: 8003, FLPort: 50051}
	tests := []struct {
		name string
		edit func(o *pki.FlareKitOptions)
		want string
	}{
		{name: "ok", edit: func(o *pki.FlareKitOptions) {}},
		{name: "ipv6", edit: func(o *pki.FlareKitOptions) { o.AdminHost = "::1" }, want: "IPv6"},
		{name: "wildcard", edit: func(o *pki.FlareKitOptions) { o.AdminHost = "*.example.org" }, want: "wildcard"},
		{name: "not a host", edit: func(o *pki.FlareKitOptions) { o.AdminHost = "a b" }, want: "neither an IP"},
		{name: "port", edit: func(o *pki.FlareKitOptions) { o.AdminPort = 0 }, want: "admin port 0"},
		{name: "name", edit: func(o *pki.FlareKitOptions) { o.Name = "../x" }, want: "certificate name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := ok
			tt.edit(&o)
			err := pki.CheckFlareKit(o)
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an invalid-argument error saying %q", err, tt.want)
			}
		})
	}
}
