package envoy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log/slog"
	"math/big"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/api/directorpb"
)

// mustTLSPair makes a throwaway CA and returns a server config for
// 127.0.0.1 and a client config, each trusting the CA alone.
func mustTLSPair(tb testing.TB) (server, client *tls.Config) {
	tb.Helper()
	key := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			tb.Fatal(err)
		}
		return k
	}
	now := time.Now()
	caKey := key()
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
	issue := func(serial int64, cn string, usage x509.ExtKeyUsage) tls.Certificate {
		k := key()
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: cn},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &k.PublicKey, caKey)
		if err != nil {
			tb.Fatal(err)
		}
		return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: k}
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	server = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{issue(2, "director", x509.ExtKeyUsageServerAuth)},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}
	client = &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{issue(3, "site-1", x509.ExtKeyUsageClientAuth)},
		RootCAs: pool}
	return server, client
}

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

// mustGRPCDirector serves a director that accepts every shard, with TLS if
// cfg is set.
func mustGRPCDirector(tb testing.TB, cfg *tls.Config) string {
	tb.Helper()
	lis := mustListen(tb, nil)
	var opts []grpc.ServerOption
	if cfg != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg)))
	}
	s := grpc.NewServer(opts...)
	directorpb.RegisterDirectorServer(s, director{f: &fakeDirector{}})
	go s.Serve(lis)
	tb.Cleanup(s.Stop)
	return lis.Addr().String()
}

// mustAdminPort answers every connection as the director's admin port
// answers a request it cannot read: with an error reply in JSON.
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
				br := bufio.NewReader(c)
				br.Peek(1)
				adminproto.WriteMessage(c, &adminproto.Message{Meta: map[string]any{"status": adminproto.StatusSyntaxError, "info": "read request: not a JSON object"}})
			}()
		}
	}()
	return lis.Addr().String()
}

// mustAlertServer answers every connection with a TLS alert record.
func mustAlertServer(tb testing.TB) string {
	tb.Helper()
	lis := mustListen(tb, nil)
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

// TestDialHint calls real servers that are not the director's gRPC port,
// or differ from the client about TLS, and checks the hint for the error.
func TestDialHint(t *testing.T) {
	serverTLS, clientTLS := mustTLSPair(t)
	tests := []struct {
		name   string
		addr   string
		client *tls.Config
		want   string // in the hint; "" for none
	}{
		{"admin port", mustAdminPort(t, nil), nil, "if it is the director's admin port (fladmin's), point --director at its gRPC port"},
		{"admin port with TLS", mustAdminPort(t, serverTLS), clientTLS, "speaks TLS but not HTTP/2 (gRPC): it is likely the director's admin port"},
		{"TLS client, plaintext gRPC port", mustGRPCDirector(t, nil), clientTLS, "does not speak TLS: if the director serves without TLS, leave out --tls-ca"},
		{"TLS client, plaintext admin port", mustAdminPort(t, nil), clientTLS, "does not speak TLS"},
		{"plaintext client, TLS gRPC port", mustGRPCDirector(t, serverTLS), nil, "if it serves TLS, give --tls-ca, --tls-cert and --tls-key"},
		{"plaintext client, server sends a TLS alert", mustAlertServer(t), nil, "if it serves TLS, give --tls-ca, --tls-cert and --tls-key"},
		{"right port", mustGRPCDirector(t, nil), nil, ""},
		{"right port with TLS", mustGRPCDirector(t, serverTLS), clientTLS, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			creds := insecure.NewCredentials()
			if tt.client != nil {
				creds = credentials.NewTLS(tt.client)
			}
			conn, err := grpc.NewClient(tt.addr, grpc.WithTransportCredentials(creds))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err = directorpb.NewDirectorClient(conn).UpdateShardInfo(ctx, &directorpb.UpdateShardInfoRequest{ShardInfo: &directorpb.ShardInfo{NodeInfo: &directorpb.NodeInfo{Name: "site-1"}}})
			hint := dialHint(err)
			if tt.want == "" {
				if err != nil || hint != "" {
					t.Fatalf("got error %v, hint %q; want neither", err, hint)
				}
				return
			}
			if !strings.Contains(hint, tt.want) {
				t.Fatalf("error %v: got hint %q, want one with %q", err, hint, tt.want)
			}
		})
	}
}

// syncBuffer is a bytes.Buffer for a logger and a test reading it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRunLogsWrongPort starts an envoy whose director address is the admin
// port and checks that its retries say so.
func TestRunLogsWrongPort(t *testing.T) {
	var logs syncBuffer
	e, err := New(Config{
		Name:     "site-1",
		Director: mustAdminPort(t, nil),
		ShardDir: t.TempDir(),
		WorkDir:  filepath.Join(t.TempDir(), "work"),
		Logger:   slog.New(slog.NewTextHandler(&logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	stop, _ := startRun(t, e)
	eventually(t, "a retry with a hint", func() bool {
		return strings.Contains(logs.String(), `hint="what answers at --director does not speak HTTP/2`)
	})
	if err := stop(); err != nil {
		t.Fatalf("Run = %v, want nil after cancel", err)
	}
	if !strings.Contains(logs.String(), "director unreachable; retrying") {
		t.Fatalf("logs:\n%s", logs.String())
	}
}
