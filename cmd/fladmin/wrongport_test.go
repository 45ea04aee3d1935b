package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/cmd/internal/cli"
)

// testPKI is a throwaway CA with a server certificate for 127.0.0.1 and an
// admin's client certificate, as files for fladmin's --tls-* flags.
type testPKI struct {
	server        *tls.Config
	ca, cert, key string
}

func mustTestPKI(tb testing.TB) *testPKI {
	tb.Helper()
	dir := tb.TempDir()
	caKey := mustKey(tb)
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		tb.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		tb.Fatal(err)
	}
	issue := func(serial int64, cn string, usage x509.ExtKeyUsage) (der []byte, key *ecdsa.PrivateKey) {
		key = mustKey(tb)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn, OrganizationalUnit: []string{"project_admin"}},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			tb.Fatal(err)
		}
		return der, key
	}
	srvDER, srvKey := issue(2, "director", x509.ExtKeyUsageServerAuth)
	cliDER, cliKey := issue(3, "alice", x509.ExtKeyUsageClientAuth)
	p := &testPKI{ca: filepath.Join(dir, "ca.crt"), cert: filepath.Join(dir, "alice.crt"), key: filepath.Join(dir, "alice.key")}
	writePEM(tb, p.ca, "CERTIFICATE", caDER)
	writePEM(tb, p.cert, "CERTIFICATE", cliDER)
	keyDER, err := x509.MarshalECPrivateKey(cliKey)
	if err != nil {
		tb.Fatal(err)
	}
	writePEM(tb, p.key, "EC PRIVATE KEY", keyDER)
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	p.server = &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{{Certificate: [][]byte{srvDER}, PrivateKey: srvKey}},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
	}
	return p
}

func mustKey(tb testing.TB) *ecdsa.PrivateKey {
	tb.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}

func writePEM(tb testing.TB, path, typ string, der []byte) {
	tb.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		tb.Fatal(err)
	}
}

func (p *testPKI) flags() []string {
	return []string{"--tls-ca", p.ca, "--tls-cert", p.cert, "--tls-key", p.key}
}

// mustListen listens on a free loopback port, with TLS if cfg is set.
func mustListen(tb testing.TB, cfg *tls.Config) net.Listener {
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

// mustGRPCServer serves a gRPC server without services, as the director's
// gRPC port is to fladmin, with TLS if cfg is set.
func mustGRPCServer(tb testing.TB, cfg *tls.Config) string {
	tb.Helper()
	lis := mustListen(tb, nil)
	var opts []grpc.ServerOption
	if cfg != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg)))
	}
	s := grpc.NewServer(opts...)
	go s.Serve(lis)
	tb.Cleanup(s.Stop)
	return lis.Addr().String()
}

// mustAdminPort answers every connection as a director's admin port does a
// request it cannot read: an error reply. With cfg it serves TLS.
func mustAdminPort(tb testing.TB, cfg *tls.Config) string {
	tb.Helper()
	lis := mustListen(tb, cfg)
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				_, err := adminproto.ReadMessage(bufio.NewReader(c), adminproto.MaxTextSize)
				if err != nil {
					adminproto.WriteMessage(c, &adminproto.Message{Meta: map[string]any{"status": adminproto.StatusSyntaxError, "info": err.Error()}})
				}
			}()
		}
	}()
	return lis.Addr().String()
}

// mustAlertServer answers every connection with a TLS alert record, as a
// TLS server may answer a client that does not speak TLS.
func mustAlertServer(tb testing.TB) string {
	tb.Helper()
	lis := mustListen(tb, nil)
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			// A fatal protocol_version alert (70) in a TLS 1.2 record.
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

// TestWrongPort points fladmin at servers that are not the admin port it
// can talk to and checks that the error says what answered and what to do.
func TestWrongPort(t *testing.T) {
	pki := mustTestPKI(t)
	tests := []struct {
		name string
		addr string
		tls  bool
		want []string
	}{
		{"gRPC port", mustGRPCServer(t, nil), false,
			[]string{"is not an admin port: it speaks HTTP/2", "--admin-listen", "fix --addr"}},
		{"gRPC port with TLS", mustGRPCServer(t, pki.server), true,
			[]string{"is not an admin port: it speaks HTTP/2", "--admin-listen"}},
		{"gRPC port without TLS, fladmin with", mustGRPCServer(t, nil), true,
			[]string{"is not an admin port: it speaks HTTP/2", "--admin-listen"}},
		{"TLS client, plaintext admin port", mustAdminPort(t, nil), true,
			[]string{"does not speak TLS and this client does", "leave out --tls-ca, --tls-cert and --tls-key"}},
		{"plaintext client, server sends a TLS alert", mustAlertServer(t), false,
			[]string{"speaks TLS and this client does not", "give --tls-ca, --tls-cert and --tls-key"}},
		{"plaintext client, TLS admin port", mustAdminPort(t, pki.server), false,
			[]string{"director closed the connection without replying", "if the director serves TLS, give --tls-ca, --tls-cert and --tls-key"}},
		{"plaintext client, gRPC port with TLS", mustGRPCServer(t, pki.server), false,
			[]string{"director closed the connection without replying", "if the director serves TLS, give --tls-ca, --tls-cert and --tls-key"}},
	}
	for _, tt := range tests {
		for _, cmd := range [][]string{{"status"}, {"list-envoys"}, {"download-job", "--dir", t.TempDir(), "0b5a6a7e"}} {
			t.Run(tt.name+"/"+cmd[0], func(t *testing.T) {
				args := cmd
				if tt.tls {
					args = append(pki.flags(), cmd...)
				}
				_, stderr, code := runFladminTTY(t, tt.addr, false, args...)
				if code != cli.ExitError {
					t.Fatalf("exit %d, want 1; stderr %q", code, stderr)
				}
				for _, w := range tt.want {
					if !strings.Contains(stderr, w) {
						t.Fatalf("stderr %q lacks %q", stderr, w)
					}
				}
			})
		}
	}
}

// TestRightPortWithTLS checks that offering adminproto.ALPN costs nothing
// with an admin port that serves TLS and selects no protocol.
func TestRightPortWithTLS(t *testing.T) {
	pki := mustTestPKI(t)
	lis := mustListen(t, pki.server)
	reply, err := adminproto.EncodeMessage(ok(map[string]any{"version": "v1", "uptime": "1s", "envoys": 0, "envoysOnline": 0}))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				if _, err := adminproto.ReadMessage(bufio.NewReader(c), adminproto.MaxTextSize); err == nil {
					adminproto.WriteText(c, reply)
				}
			}()
		}
	}()
	out, stderr, code := runFladminTTY(t, lis.Addr().String(), false, append(pki.flags(), "status")...)
	if code != 0 || !strings.Contains(out, "v1") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, stderr)
	}
}
