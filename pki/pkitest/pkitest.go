// Package pkitest makes a throwaway federation PKI with package pki itself,
// for tests that need TLS peers: a CA in a temp dir with a director
// certificate for the loopback addresses, certificates issued by name, the
// tls.Configs and --tls-* flags the programs build from them, and the
// listeners that tests of clients' wrong-port messages dial.
package pkitest

import (
	"bufio"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/pki"
)

// DirectorName is the name of the director certificate New issues.
const DirectorName = "director"

// PKI is a CA in a temp dir.
type PKI struct {
	Dir string
	tb  testing.TB
}

// New creates a CA in a temp dir of tb and issues the director's
// certificate (for localhost, 127.0.0.1 and ::1).
func New(tb testing.TB) *PKI {
	tb.Helper()
	p := &PKI{Dir: tb.TempDir(), tb: tb}
	if err := pki.InitCA(p.Dir, "", 0); err != nil {
		tb.Fatal(err)
	}
	p.Issue(pki.IssueOptions{Kind: pki.KindDirector, Name: DirectorName})
	return p
}

// Issue issues a certificate, failing the test if pki refuses.
func (p *PKI) Issue(o pki.IssueOptions) {
	p.tb.Helper()
	if err := pki.Issue(p.Dir, o); err != nil {
		p.tb.Fatal(err)
	}
}

// Admin issues an admin certificate named name with role, and returns
// name.
func (p *PKI) Admin(name, role string) string {
	p.tb.Helper()
	p.Issue(pki.IssueOptions{Kind: pki.KindAdmin, Name: name, Role: role})
	return name
}

// Envoy issues an envoy certificate named name, and returns name.
func (p *PKI) Envoy(name string) string {
	p.tb.Helper()
	p.Issue(pki.IssueOptions{Kind: pki.KindEnvoy, Name: name})
	return name
}

// Files returns the paths of the CA certificate and of name's certificate
// and key.
func (p *PKI) Files(name string) (ca, cert, key string) {
	return filepath.Join(p.Dir, pki.CACertFile), filepath.Join(p.Dir, name+".crt"), filepath.Join(p.Dir, name+".key")
}

// Flags are the --tls-ca, --tls-cert and --tls-key flags of name.
func (p *PKI) Flags(name string) []string {
	ca, cert, key := p.Files(name)
	return []string{"--tls-ca", ca, "--tls-cert", cert, "--tls-key", key}
}

// ServerTLS is the director's server config, as director serve builds it.
func (p *PKI) ServerTLS() *tls.Config {
	p.tb.Helper()
	cfg, err := pki.ServerTLS(p.Files(DirectorName))
	if err != nil {
		p.tb.Fatal(err)
	}
	return cfg
}

// ServerTLSOf is the server config of the director certificate name, as
// director serve builds it.
func (p *PKI) ServerTLSOf(name string) *tls.Config {
	p.tb.Helper()
	cfg, err := pki.ServerTLS(p.Files(name))
	if err != nil {
		p.tb.Fatal(err)
	}
	return cfg
}

// ExpiredServerTLS is a director's server config, as ServerTLS, whose
// certificate for the loopback addresses, signed by the CA, expired an
// hour ago: as a director would serve one it loaded before it ran out
// (pki issues none, and pki.ServerTLS refuses to load one).
func (p *PKI) ExpiredServerTLS() *tls.Config {
	p.tb.Helper()
	cfg := p.ServerTLS()
	caPEM, err := os.ReadFile(filepath.Join(p.Dir, pki.CACertFile))
	if err != nil {
		p.tb.Fatal(err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(p.Dir, pki.CAKeyFile))
	if err != nil {
		p.tb.Fatal(err)
	}
	block, _ := pem.Decode(caPEM)
	caCert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		p.tb.Fatal(err)
	}
	kb, _ := pem.Decode(keyPEM)
	caKey, err := x509.ParsePKCS8PrivateKey(kb.Bytes)
	if err != nil {
		p.tb.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		p.tb.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: DirectorName, OrganizationalUnit: []string{pki.KindDirector}},
		NotBefore:    time.Now().Add(-48 * time.Hour),
		NotAfter:     time.Now().Add(-time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey.(crypto.Signer))
	if err != nil {
		p.tb.Fatal(err)
	}
	cfg.Certificates = []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}
	return cfg
}

// ClientTLS is name's client config, as envoy start and fladmin build it.
func (p *PKI) ClientTLS(name string) *tls.Config {
	p.tb.Helper()
	ca, cert, key := p.Files(name)
	cfg, err := pki.ClientTLS(ca, cert, key, "")
	if err != nil {
		p.tb.Fatal(err)
	}
	return cfg
}

// Listen listens on a free loopback port until the test ends, with TLS if
// cfg is set.
func Listen(tb testing.TB, cfg *tls.Config) net.Listener {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { lis.Close() })
	if cfg != nil {
		return tls.NewListener(lis, cfg)
	}
	return lis
}

// GRPCServer serves a gRPC server on loopback until the test ends, with
// TLS if cfg is set, and returns its address; register, if not nil, adds
// its services.
func GRPCServer(tb testing.TB, cfg *tls.Config, register func(*grpc.Server)) string {
	tb.Helper()
	lis := Listen(tb, nil)
	var opts []grpc.ServerOption
	if cfg != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg)))
	}
	s := grpc.NewServer(opts...)
	if register != nil {
		register(s)
	}
	go s.Serve(lis)
	tb.Cleanup(s.Stop)
	return lis.Addr().String()
}

// AlertServer answers every connection on loopback with a TLS alert
// record, as a TLS server may answer a client that does not speak TLS, and
// returns its address.
func AlertServer(tb testing.TB) string {
	tb.Helper()
	lis := Listen(tb, nil)
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			// Read what the client sends first, so that closing does
			// not reset the connection before the alert is read.
			c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			io.Copy(io.Discard, c)
			// A fatal protocol_version alert (70) in a TLS 1.2 record.
			c.Write([]byte{0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x46})
			c.Close()
		}
	}()
	return lis.Addr().String()
}

// AdminPort answers every connection on loopback as a director's admin
// port answers a request it cannot read: with an admin error reply, after
// reading the request if it is admin text. With cfg it serves TLS. It
// returns its address.
func AdminPort(tb testing.TB, cfg *tls.Config) string {
	tb.Helper()
	lis := Listen(tb, cfg)
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				br := bufio.NewReader(c)
				if b, err := br.Peek(1); err == nil && b[0] == '{' {
					adminproto.ReadMessage(br, adminproto.MaxTextSize)
				}
				adminproto.WriteMessage(c, &adminproto.Message{Meta: map[string]any{
					"status": adminproto.StatusSyntaxError, "info": "read request: not a JSON object"}})
			}()
		}
	}()
	return lis.Addr().String()
}

// Roots is a pool of the CA's certificate, as envoys verify job signatures
// with.
func (p *PKI) Roots() *x509.CertPool {
	p.tb.Helper()
	ca, _, _ := p.Files(DirectorName)
	b, err := os.ReadFile(ca)
	if err != nil {
		p.tb.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		p.tb.Fatalf("no certificate in %s", ca)
	}
	return pool
}

// SignJob signs archive as name, as fladmin submit-job does.
func (p *PKI) SignJob(name string, archive []byte) *pki.JobSignature {
	p.tb.Helper()
	_, cert, key := p.Files(name)
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		p.tb.Fatal(err)
	}
	sum := sha256.Sum256(archive)
	s, err := pki.SignJob(pair, hex.EncodeToString(sum[:]))
	if err != nil {
		p.tb.Fatal(err)
	}
	return s
}
