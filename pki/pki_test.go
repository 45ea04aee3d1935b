package pki

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/fedplane/fedplane/api"
)

// mustPKI creates a CA in a temp dir and issues the given certificates.
func mustPKI(tb testing.TB, certs ...IssueOptions) string {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), "pki")
	if err := InitCA(dir, "", 0); err != nil {
		tb.Fatal(err)
	}
	for _, o := range certs {
		if err := Issue(dir, o); err != nil {
			tb.Fatalf("issue %s: %v", o.Name, err)
		}
	}
	return dir
}

func mustReadCert(tb testing.TB, path string) *x509.Certificate {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	p, _ := pem.Decode(b)
	if p == nil {
		tb.Fatalf("%s: no PEM", path)
	}
	c, err := x509.ParseCertificate(p.Bytes)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

func mustServerTLS(tb testing.TB, dir, name string) *tls.Config {
	tb.Helper()
	cfg, err := ServerTLS(filepath.Join(dir, CACertFile), filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"))
	if err != nil {
		tb.Fatal(err)
	}
	return cfg
}

func mustClientTLS(tb testing.TB, caDir, dir, name, serverName string) *tls.Config {
	tb.Helper()
	cfg, err := ClientTLS(filepath.Join(caDir, CACertFile), filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key"), serverName)
	if err != nil {
		tb.Fatal(err)
	}
	return cfg
}

// pkiHandshake runs one TLS handshake over loopback TCP and returns the
// server's view of it and both sides' errors. The client reads after its
// handshake so that a rejection the server sends after TLS 1.3's client
// Finished reaches it.
func pkiHandshake(t *testing.T, server, client *tls.Config) (st tls.ConnectionState, serverErr, clientErr error) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := lis.Accept()
		if err != nil {
			serverErr = err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		tc := tls.Server(c, server)
		if serverErr = tc.Handshake(); serverErr == nil {
			st = tc.ConnectionState()
			_, serverErr = tc.Write([]byte("ok"))
		}
	}()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", lis.Addr().String(), client)
	if err == nil {
		c.SetDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 2)
		_, err = c.Read(buf)
		c.Close()
	}
	<-done
	return st, serverErr, err
}

func TestPKIRoundTrip(t *testing.T) {
	dir := mustPKI(t,
		IssueOptions{Kind: KindDirector, Name: "director"},
		IssueOptions{Kind: KindEnvoy, Name: "env_one", Org: "Hospital A"},
		IssueOptions{Kind: KindAdmin, Name: "alice@example.org", Role: RoleLead, Org: "Lab B"},
		IssueOptions{Kind: KindAdmin, Name: "bob"},
		IssueOptions{Kind: KindAdmin, Name: "carol", Role: RoleProjectAdmin},
	)
	server := mustServerTLS(t, dir, "director")
	tests := []struct {
		name       string
		client     string
		serverName string
		want       Identity
	}{
		{"envoy", "env_one", "localhost", Identity{Name: "env_one", Org: "Hospital A", Kind: KindEnvoy}},
		{"lead admin", "alice@example.org", "localhost", Identity{Name: "alice@example.org", Org: "Lab B", Kind: KindAdmin, Role: RoleLead}},
		{"member by default", "bob", "localhost", Identity{Name: "bob", Kind: KindAdmin, Role: RoleMember}},
		{"project admin", "carol", "localhost", Identity{Name: "carol", Kind: KindAdmin, Role: RoleProjectAdmin}},
		{"director as client", "director", "localhost", Identity{Name: "director", Kind: KindDirector}},
		{"server name from the address", "env_one", "", Identity{Name: "env_one", Org: "Hospital A", Kind: KindEnvoy}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := mustClientTLS(t, dir, dir, tt.client, tt.serverName)
			st, serr, cerr := pkiHandshake(t, server, client)
			if serr != nil || cerr != nil {
				t.Fatalf("handshake: server %v, client %v", serr, cerr)
			}
			if len(st.VerifiedChains) == 0 {
				t.Fatal("server has no verified chain")
			}
			if got := IdentityOf(st.VerifiedChains[0][0]); got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestPKIRefusesUntrustedClients(t *testing.T) {
	dir := mustPKI(t, IssueOptions{Kind: KindDirector, Name: "director"})
	// The foreign CA has the same name, so the client offers its certificate
	// and the server's signature check is what refuses it.
	foreign := mustPKI(t, IssueOptions{Kind: KindEnvoy, Name: "env_one"})
	server := mustServerTLS(t, dir, "director")

	// ClientTLS itself refuses a certificate that does not verify against the
	// CA, so build the impostor by hand.
	impostor := mustClientTLS(t, foreign, foreign, "env_one", "localhost")
	impostor.RootCAs = server.ClientCAs
	noCert := &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: server.ClientCAs, ServerName: "localhost"}
	tests := []struct {
		name   string
		client *tls.Config
		want   string
	}{
		{"certificate from a foreign CA", impostor, "unknown authority"},
		{"no certificate", noCert, "didn't provide a certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, serr, cerr := pkiHandshake(t, server, tt.client)
			if serr == nil || !strings.Contains(serr.Error(), tt.want) {
				t.Errorf("server: got %v, want a refusal with %q", serr, tt.want)
			}
			if cerr == nil {
				t.Errorf("client was not told it was refused")
			}
		})
	}
}

func TestPKIClientRefusesForeignServer(t *testing.T) {
	dir := mustPKI(t, IssueOptions{Kind: KindEnvoy, Name: "env_one"})
	foreign := mustPKI(t, IssueOptions{Kind: KindDirector, Name: "director"}, IssueOptions{Kind: KindEnvoy, Name: "env_one"})
	server := mustServerTLS(t, foreign, "director")
	client := mustClientTLS(t, dir, dir, "env_one", "localhost")
	if _, _, cerr := pkiHandshake(t, server, client); cerr == nil {
		t.Error("client accepted a server of a foreign CA")
	}
}

func TestPKIClientChecksServerName(t *testing.T) {
	dir := mustPKI(t, IssueOptions{Kind: KindDirector, Name: "director", Hosts: []string{"director.example.org"}}, IssueOptions{Kind: KindEnvoy, Name: "env_one"})
	server := mustServerTLS(t, dir, "director")
	tests := []struct {
		serverName string
		ok         bool
	}{
		{"director.example.org", true},
		{"localhost", false},
		{"", false}, // 127.0.0.1 is not among the SANs
	}
	for _, tt := range tests {
		t.Run(tt.serverName, func(t *testing.T) {
			_, _, cerr := pkiHandshake(t, server, mustClientTLS(t, dir, dir, "env_one", tt.serverName))
			if got := cerr == nil; got != tt.ok {
				t.Errorf("handshake ok = %v, want %v (%v)", got, tt.ok, cerr)
			}
		})
	}
}

func TestInitCACertificate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "pki")
	if err := InitCA(dir, "Test Federation CA", 30); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o700 {
		t.Errorf("dir mode: got %v, want 0700", got)
	}
	ca := mustReadCert(t, filepath.Join(dir, CACertFile))
	switch {
	case ca.Subject.CommonName != "Test Federation CA":
		t.Errorf("CN: got %q", ca.Subject.CommonName)
	case !ca.IsCA || ca.MaxPathLen != 0 || !ca.MaxPathLenZero:
		t.Errorf("basic constraints: IsCA %v MaxPathLen %d zero %v", ca.IsCA, ca.MaxPathLen, ca.MaxPathLenZero)
	case ca.KeyUsage != x509.KeyUsageCertSign|x509.KeyUsageCRLSign:
		t.Errorf("key usage: got %v", ca.KeyUsage)
	case time.Until(ca.NotAfter) > 31*24*time.Hour || time.Until(ca.NotAfter) < 29*24*time.Hour:
		t.Errorf("not after: got %v, want in 30 days", ca.NotAfter)
	case ca.SerialNumber.BitLen() < 64:
		t.Errorf("serial %v is not random 128 bits", ca.SerialNumber)
	}
	if err := ca.CheckSignatureFrom(ca); err != nil {
		t.Errorf("not self-signed: %v", err)
	}
}

func TestIssueCertificateFields(t *testing.T) {
	dir := mustPKI(t,
		IssueOptions{Kind: KindDirector, Name: "director", Hosts: []string{"fl.example.org", "10.0.0.7", "::1"}, Org: "Consortium"},
		IssueOptions{Kind: KindDirector, Name: "local"},
		IssueOptions{Kind: KindEnvoy, Name: "env_one", Days: 10},
		IssueOptions{Kind: KindAdmin, Name: "alice", Role: RoleLead, Days: 1000},
	)
	ca := mustReadCert(t, filepath.Join(dir, CACertFile))
	tests := []struct {
		name    string
		ou      []string
		org     []string
		eku     []x509.ExtKeyUsage
		dns     []string
		ips     []string
		maxDays int
	}{
		{"director", []string{KindDirector}, []string{"Consortium"}, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, []string{"fl.example.org"}, []string{"10.0.0.7", "::1"}, DefaultCertDays},
		{"local", []string{KindDirector}, nil, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, []string{"localhost"}, []string{"127.0.0.1", "::1"}, DefaultCertDays},
		{"env_one", []string{KindEnvoy}, nil, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil, nil, 10},
		{"alice", []string{RoleLead}, nil, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil, nil, 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := mustReadCert(t, filepath.Join(dir, tt.name+".crt"))
			if err := c.CheckSignatureFrom(ca); err != nil {
				t.Errorf("not signed by the CA: %v", err)
			}
			if c.Subject.CommonName != tt.name {
				t.Errorf("CN: got %q, want %q", c.Subject.CommonName, tt.name)
			}
			if !slices.Equal(c.Subject.OrganizationalUnit, tt.ou) {
				t.Errorf("OU: got %q, want %q", c.Subject.OrganizationalUnit, tt.ou)
			}
			if !slices.Equal(c.Subject.Organization, tt.org) {
				t.Errorf("O: got %q, want %q", c.Subject.Organization, tt.org)
			}
			if c.IsCA || c.KeyUsage != x509.KeyUsageDigitalSignature {
				t.Errorf("IsCA %v, key usage %v: want a leaf for digital signatures", c.IsCA, c.KeyUsage)
			}
			if !slices.Equal(c.ExtKeyUsage, tt.eku) {
				t.Errorf("ext key usage: got %v, want %v", c.ExtKeyUsage, tt.eku)
			}
			if !slices.Equal(c.DNSNames, tt.dns) {
				t.Errorf("DNS SANs: got %q, want %q", c.DNSNames, tt.dns)
			}
			var ips []string
			for _, ip := range c.IPAddresses {
				ips = append(ips, ip.String())
			}
			if !slices.Equal(ips, tt.ips) {
				t.Errorf("IP SANs: got %q, want %q", ips, tt.ips)
			}
			if left := time.Until(c.NotAfter); left > time.Duration(tt.maxDays)*24*time.Hour || left < time.Duration(tt.maxDays-1)*24*time.Hour {
				t.Errorf("not after: got %v, want in %d days", c.NotAfter, tt.maxDays)
			}
			if c.SerialNumber.Cmp(ca.SerialNumber) == 0 {
				t.Error("serial repeats the CA's")
			}
		})
	}
}

func TestIssueCutToCAExpiry(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pki")
	if err := InitCA(dir, "", 5); err != nil {
		t.Fatal(err)
	}
	if err := Issue(dir, IssueOptions{Kind: KindEnvoy, Name: "env_one"}); err != nil {
		t.Fatal(err)
	}
	ca, c := mustReadCert(t, filepath.Join(dir, CACertFile)), mustReadCert(t, filepath.Join(dir, "env_one.crt"))
	if c.NotAfter.After(ca.NotAfter) {
		t.Errorf("certificate expires %v, after its CA (%v)", c.NotAfter, ca.NotAfter)
	}
}

func TestPKIFileModes(t *testing.T) {
	dir := mustPKI(t, IssueOptions{Kind: KindEnvoy, Name: "env_one"})
	tests := []struct {
		file    string
		mode    fs.FileMode
		pemType string
	}{
		{CAKeyFile, 0o600, "PRIVATE KEY"},
		{"env_one.key", 0o600, "PRIVATE KEY"},
		{CACertFile, 0o644, "CERTIFICATE"},
		{"env_one.crt", 0o644, "CERTIFICATE"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			path := filepath.Join(dir, tt.file)
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if got := fi.Mode().Perm(); got != tt.mode {
				t.Errorf("mode: got %v, want %v", got, tt.mode)
			}
			b, _ := os.ReadFile(path)
			if p, _ := pem.Decode(b); p == nil || p.Type != tt.pemType {
				t.Errorf("not a PEM %s", tt.pemType)
			}
		})
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != len(tests) {
		t.Errorf("got %d files, want %d: %v", len(entries), len(tests), entries)
	}
}

func TestPKIRefusesOverwrite(t *testing.T) {
	dir := mustPKI(t, IssueOptions{Kind: KindEnvoy, Name: "env_one"})
	caBefore, _ := os.ReadFile(filepath.Join(dir, CAKeyFile))
	keyBefore, _ := os.ReadFile(filepath.Join(dir, "env_one.key"))

	tests := []struct {
		name string
		run  func() error
		file string
	}{
		{"CA", func() error { return InitCA(dir, "", 0) }, CACertFile},
		{"certificate", func() error { return Issue(dir, IssueOptions{Kind: KindAdmin, Name: "env_one"}) }, "env_one.crt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.run()
			if !errors.Is(err, fs.ErrExist) || !strings.Contains(err.Error(), tt.file) {
				t.Errorf("got %v, want an error naming %s", err, tt.file)
			}
		})
	}
	if err := os.Remove(filepath.Join(dir, CACertFile)); err != nil {
		t.Fatal(err)
	}
	if err := InitCA(dir, "", 0); err == nil || !strings.Contains(err.Error(), CAKeyFile) {
		t.Errorf("CA with only ca.key left: got %v, want an error naming %s", err, CAKeyFile)
	}
	caAfter, _ := os.ReadFile(filepath.Join(dir, CAKeyFile))
	keyAfter, _ := os.ReadFile(filepath.Join(dir, "env_one.key"))
	if string(caBefore) != string(caAfter) || string(keyBefore) != string(keyAfter) {
		t.Error("a key was replaced")
	}
}

func TestIssueInvalid(t *testing.T) {
	dir := mustPKI(t)
	tests := []struct {
		name string
		o    IssueOptions
		want string
	}{
		{"empty name", IssueOptions{Kind: KindEnvoy}, "empty"},
		{"slash in name", IssueOptions{Kind: KindEnvoy, Name: "a/ca"}, "has '/'"},
		{"dot first", IssueOptions{Kind: KindEnvoy, Name: ".hidden"}, "starts with a dot"},
		{"space in name", IssueOptions{Kind: KindEnvoy, Name: "env one"}, "has ' '"},
		{"long name", IssueOptions{Kind: KindEnvoy, Name: strings.Repeat("a", 129)}, "at most 128"},
		{"unknown kind", IssueOptions{Kind: "frontend", Name: "x"}, `unknown kind "frontend"`},
		{"no kind", IssueOptions{Name: "x"}, `unknown kind ""`},
		{"unknown role", IssueOptions{Kind: KindAdmin, Name: "x", Role: "owner"}, `unknown role "owner"`},
		{"role on an envoy", IssueOptions{Kind: KindEnvoy, Name: "x", Role: RoleLead}, "only admin certificates carry a role"},
		{"role on the director", IssueOptions{Kind: KindDirector, Name: "x", Role: RoleMember}, "only admin certificates carry a role"},
		{"hosts on an envoy", IssueOptions{Kind: KindEnvoy, Name: "x", Hosts: []string{"a.example"}}, "only director certificates carry hosts"},
		{"bad host", IssueOptions{Kind: KindDirector, Name: "x", Hosts: []string{"a b"}}, `host "a b"`},
		{"negative days", IssueOptions{Kind: KindEnvoy, Name: "x", Days: -1}, "must be positive"},
		{"too many days", IssueOptions{Kind: KindEnvoy, Name: "x", Days: 1 << 40}, "100 years"},
		{"control character in org", IssueOptions{Kind: KindEnvoy, Name: "x", Org: "a\nb"}, "not printable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Issue(dir, tt.o)
			if !errors.Is(err, api.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want api.ErrInvalid with %q", err, tt.want)
			}
		})
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Errorf("invalid issues wrote files: %v", entries)
	}
}

func TestIssueMissingCA(t *testing.T) {
	dir := t.TempDir()
	err := Issue(dir, IssueOptions{Kind: KindEnvoy, Name: "env_one"})
	want := "no CA in " + dir + ": run `director pki init --dir " + dir + "` first"
	if err == nil || err.Error() != want {
		t.Errorf("got %v, want %q", err, want)
	}
}

func TestInitCAInvalid(t *testing.T) {
	tests := []struct {
		name, ca string
		days     int
	}{
		{"negative days", "", -5},
		{"blank name", "  ", 0},
		{"control character", "CA\x00", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := InitCA(dir, tt.ca, tt.days); !errors.Is(err, api.ErrInvalid) {
				t.Errorf("got %v, want api.ErrInvalid", err)
			}
			if entries, _ := os.ReadDir(dir); len(entries) != 0 {
				t.Errorf("wrote %v", entries)
			}
		})
	}
}

func TestTLSConfigErrorsNameTheFile(t *testing.T) {
	dir := mustPKI(t, IssueOptions{Kind: KindDirector, Name: "director"}, IssueOptions{Kind: KindEnvoy, Name: "env_one"})
	other := mustPKI(t, IssueOptions{Kind: KindDirector, Name: "director"})
	garbage := filepath.Join(t.TempDir(), "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	ca, crt, key := filepath.Join(dir, CACertFile), filepath.Join(dir, "director.crt"), filepath.Join(dir, "director.key")
	missing := filepath.Join(dir, "missing.crt")
	tests := []struct {
		name          string
		ca, crt, key  string
		wantInMessage string
	}{
		{"missing CA", missing, crt, key, missing},
		{"garbage CA", garbage, crt, key, garbage},
		{"missing cert", ca, missing, key, missing},
		{"garbage cert", ca, garbage, key, garbage},
		{"missing key", ca, crt, missing, missing},
		{"garbage key", ca, crt, garbage, garbage},
		{"key of another cert", ca, crt, filepath.Join(dir, "env_one.key"), "env_one.key"},
		{"cert of another CA", ca, filepath.Join(other, "director.crt"), filepath.Join(other, "director.key"), "does not verify"},
		{"client cert cannot serve", ca, filepath.Join(dir, "env_one.crt"), filepath.Join(dir, "env_one.key"), "env_one.crt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ServerTLS(tt.ca, tt.crt, tt.key)
			if err == nil || !strings.Contains(err.Error(), tt.wantInMessage) {
				t.Errorf("got %v, want an error with %q", err, tt.wantInMessage)
			}
		})
	}
	if _, err := ClientTLS(ca, filepath.Join(dir, "env_one.crt"), garbage, ""); err == nil || !strings.Contains(err.Error(), garbage) {
		t.Errorf("client: got %v, want an error naming %s", err, garbage)
	}
}

func TestTLSConfigSettings(t *testing.T) {
	dir := mustPKI(t, IssueOptions{Kind: KindDirector, Name: "director"}, IssueOptions{Kind: KindEnvoy, Name: "env_one"})
	s := mustServerTLS(t, dir, "director")
	c := mustClientTLS(t, dir, dir, "env_one", "fl.example.org")
	if s.MinVersion != tls.VersionTLS12 || c.MinVersion != tls.VersionTLS12 {
		t.Errorf("min version: server %x, client %x", s.MinVersion, c.MinVersion)
	}
	if s.ClientAuth != tls.RequireAndVerifyClientCert || s.ClientCAs == nil {
		t.Errorf("server does not require verified client certificates")
	}
	if c.RootCAs == nil || c.ServerName != "fl.example.org" || c.InsecureSkipVerify {
		t.Errorf("client: roots %v, server name %q", c.RootCAs != nil, c.ServerName)
	}
}

func TestIdentityOf(t *testing.T) {
	tests := []struct {
		name string
		cn   string
		o    []string
		ou   []string
		want Identity
	}{
		{"envoy", "env_one", []string{"Org", "Other"}, []string{KindEnvoy}, Identity{Name: "env_one", Org: "Org", Kind: KindEnvoy}},
		{"director", "director", nil, []string{KindDirector}, Identity{Name: "director", Kind: KindDirector}},
		{"admin role", "alice", nil, []string{RoleProjectAdmin}, Identity{Name: "alice", Kind: KindAdmin, Role: RoleProjectAdmin}},
		{"unknown OU first", "bob", nil, []string{"Radiology", RoleMember}, Identity{Name: "bob", Kind: KindAdmin, Role: RoleMember}},
		{"no OU", "eve", nil, nil, Identity{Name: "eve"}},
		{"admin is not a role", "mallory", nil, []string{KindAdmin}, Identity{Name: "mallory"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &x509.Certificate{}
			c.Subject.CommonName, c.Subject.Organization, c.Subject.OrganizationalUnit = tt.cn, tt.o, tt.ou
			if got := IdentityOf(c); got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestFromConnState(t *testing.T) {
	leaf := func(cn string, ou ...string) *x509.Certificate {
		c := &x509.Certificate{}
		c.Subject.CommonName, c.Subject.OrganizationalUnit = cn, ou
		return c
	}
	ca := leaf("fedplane CA")
	tests := []struct {
		name   string
		st     tls.ConnectionState
		want   Identity
		wantOK bool
	}{
		{"no handshake", tls.ConnectionState{}, Identity{}, false},
		{"unverified certificate", tls.ConnectionState{PeerCertificates: []*x509.Certificate{leaf("env_one", KindEnvoy)}}, Identity{}, false},
		{"empty chain", tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{}}}, Identity{}, false},
		{"envoy", tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leaf("env_one", KindEnvoy), ca}}}, Identity{Name: "env_one", Kind: KindEnvoy}, true},
		{"admin", tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leaf("alice", RoleLead), ca}}}, Identity{Name: "alice", Kind: KindAdmin, Role: RoleLead}, true},
		{"first chain counts", tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leaf("director", KindDirector), ca}, {leaf("other", KindEnvoy), ca}}}, Identity{Name: "director", Kind: KindDirector}, true},
		{"no kind", tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{leaf("eve")}}}, Identity{Name: "eve"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := FromConnState(tt.st)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("got %+v, %v, want %+v, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

// plainAuth is the AuthInfo of a connection without TLS.
type plainAuth struct{}

func (plainAuth) AuthType() string { return "plain" }

func TestFromContext(t *testing.T) {
	c := &x509.Certificate{}
	c.Subject.CommonName, c.Subject.OrganizationalUnit = "env_one", []string{KindEnvoy}
	verified := tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{c}}}
	tests := []struct {
		name   string
		ctx    context.Context
		want   Identity
		wantOK bool
	}{
		{"no peer", context.Background(), Identity{}, false},
		{"no TLS", peer.NewContext(context.Background(), &peer.Peer{AuthInfo: plainAuth{}}), Identity{}, false},
		{"no auth info", peer.NewContext(context.Background(), &peer.Peer{}), Identity{}, false},
		{"TLS without a client certificate", peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{}}), Identity{}, false},
		{"verified envoy", peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{State: verified}}), Identity{Name: "env_one", Kind: KindEnvoy}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := FromContext(tt.ctx)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("got %+v, %v, want %+v, %v", got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestIsAdminRole(t *testing.T) {
	tests := []struct {
		role string
		want bool
	}{
		{RoleProjectAdmin, true},
		{RoleLead, true},
		{RoleMember, true},
		{KindAdmin, false},
		{KindEnvoy, false},
		{"", false},
		{"Lead", false},
	}
	for _, tt := range tests {
		t.Run(tt.role, func(t *testing.T) {
			if got := IsAdminRole(tt.role); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}
