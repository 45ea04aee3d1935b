package pki_test

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/fedplane/fedplane/pki"
	"github.com/fedplane/fedplane/pki/pkitest"
)

func digest(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

func TestJobSignature(t *testing.T) {
	p := pkitest.New(t)
	other := pkitest.New(t) // another federation's CA
	p.Issue(pki.IssueOptions{Kind: pki.KindAdmin, Name: "alice", Role: pki.RoleLead, Org: "lab"})
	p.Admin("bob", pki.RoleProjectAdmin)
	p.Admin("mia", pki.RoleMember)
	p.Envoy("site-a")
	other.Admin("mallory", pki.RoleProjectAdmin)
	sum := digest("archive")

	sign := func(pp *pkitest.PKI, name, d string) *pki.JobSignature {
		t.Helper()
		_, cert, key := pp.Files(name)
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			t.Fatal(err)
		}
		s, err := pki.SignJob(pair, d)
		if err != nil {
			t.Fatal(err)
		}
		// Every signature travels encoded.
		s, err = pki.ParseJobSignature(s.Marshal())
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	tampered := sign(p, "bob", sum)
	tampered.Signature[len(tampered.Signature)-1] ^= 1
	swapped := sign(p, "bob", sum)
	swapped.Cert = sign(p, "alice", sum).Cert

	tests := []struct {
		name    string
		sig     *pki.JobSignature
		sum     string
		now     time.Time
		want    pki.Identity
		wantErr string
	}{
		{name: "lead", sig: sign(p, "alice", sum), sum: sum, want: pki.Identity{Name: "alice", Org: "lab", Kind: pki.KindAdmin, Role: pki.RoleLead}},
		{name: "project admin", sig: sign(p, "bob", sum), sum: sum, want: pki.Identity{Name: "bob", Kind: pki.KindAdmin, Role: pki.RoleProjectAdmin}},
		{name: "archive changed", sig: sign(p, "bob", sum), sum: digest("other"), wantErr: "the archive was changed after it was signed"},
		{name: "other CA", sig: sign(other, "mallory", sum), sum: sum, wantErr: "not from this site's CA"},
		{name: "member", sig: sign(p, "mia", sum), sum: sum, wantErr: "not an admin who may submit"},
		{name: "envoy", sig: sign(p, "site-a", sum), sum: sum, wantErr: "not an admin who may submit"},
		{name: "tampered signature", sig: tampered, sum: sum, wantErr: "does not verify"},
		{name: "another's certificate", sig: swapped, sum: sum, wantErr: "does not verify"},
		{name: "expired", sig: sign(p, "bob", sum), sum: sum, now: time.Now().AddDate(30, 0, 0), wantErr: "not from this site's CA"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			now := tt.now
			if now.IsZero() {
				now = time.Now()
			}
			id, err := tt.sig.Verify(p.Roots(), tt.sum, now)
			if tt.wantErr != "" {
				if !errors.Is(err, pki.ErrBadSignature) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Verify = %v, want an ErrBadSignature saying %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || id != tt.want {
				t.Fatalf("Verify = %+v, %v; want %+v", id, err, tt.want)
			}
		})
	}
}

func TestParseJobSignature(t *testing.T) {
	tests := []struct {
		name, in, wantErr string
	}{
		{"not JSON", "{", "bad job signature"},
		{"version", `{"version":2}`, "version 2"},
		{"digest", `{"version":1,"sha256":"abc","signature":"AA==","cert":"AA=="}`, "not a hex SHA-256"},
		{"upper-case digest", `{"version":1,"sha256":"` + strings.ToUpper(digest("x")) + `","signature":"AA==","cert":"AA=="}`, "lowercase"},
		{"no signature", `{"version":1,"sha256":"` + digest("x") + `","cert":"AA=="}`, "are required"},
		{"too large", `{"cert":"` + strings.Repeat("A", pki.MaxJobSignature) + `"}`, "at most"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := pki.ParseJobSignature([]byte(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("ParseJobSignature = %v, want an error saying %q", err, tt.wantErr)
			}
		})
	}
}

func FuzzParseJobSignature(f *testing.F) {
	f.Add([]byte(`{"version":1,"sha256":"` + digest("x") + `","signature":"AA==","cert":"AA=="}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := pki.ParseJobSignature(b)
		if err != nil {
			return
		}
		// Whatever parses never verifies without a real certificate, and
		// never panics trying.
		if _, err := s.Verify(x509.NewCertPool(), s.SHA256, time.Now()); err == nil {
			t.Fatal("a fuzzed signature verified")
		}
	})
}
