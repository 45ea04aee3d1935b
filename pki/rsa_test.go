package pki_test

import (
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/pki"
	"github.com/fedplane/fedplane/pki/pkitest"
)

// TestRSAAdmin issues an admin an RSA key (for FLARE's tools, which sign
// with RSA-PSS), and checks that fedplane's own job signature works with
// it: signed with the RSA key, verified against the CA, the identity read.
func TestRSAAdmin(t *testing.T) {
	p := pkitest.New(t)
	p.Issue(pki.IssueOptions{Kind: pki.KindAdmin, Name: "rita", Role: pki.RoleLead, Org: "lab", KeyType: pki.KeyRSA})
	_, cert, key := p.Files("rita")
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if pub, ok := leaf.PublicKey.(*rsa.PublicKey); !ok || pub.N.BitLen() != pki.RSABits {
		t.Fatalf("public key %T, want RSA of %d bits", leaf.PublicKey, pki.RSABits)
	}
	sum := digest("archive")
	s, err := pki.SignJob(pair, sum)
	if err != nil {
		t.Fatal(err)
	}
	s, err = pki.ParseJobSignature(s.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	id, err := s.Verify(p.Roots(), sum, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if want := (pki.Identity{Name: "rita", Org: "lab", Kind: pki.KindAdmin, Role: pki.RoleLead}); id != want {
		t.Fatalf("identity %+v, want %+v", id, want)
	}
	if _, err := s.Verify(p.Roots(), digest("another archive"), time.Now()); err == nil {
		t.Fatal("an RSA signature verified for another archive")
	}
}

func TestKeyTypeOptions(t *testing.T) {
	p := pkitest.New(t)
	tests := []struct {
		name string
		o    pki.IssueOptions
		want string
	}{
		{name: "rsa envoy", o: pki.IssueOptions{Kind: pki.KindEnvoy, Name: "e1", KeyType: pki.KeyRSA}, want: "only admin certificates may have RSA keys"},
		{name: "unknown", o: pki.IssueOptions{Kind: pki.KindAdmin, Name: "a1", KeyType: "dsa"}, want: `unknown key type "dsa"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := pki.Issue(p.Dir, tt.o)
			if !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("got %v, want an invalid-argument error saying %q", err, tt.want)
			}
		})
	}
}
