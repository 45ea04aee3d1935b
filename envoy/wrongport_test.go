package envoy

import (
	"bytes"
	"context"
	"crypto/tls"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/pki/pkitest"
)

// mustTLSPair makes a throwaway federation PKI and returns the director's
// server config and an envoy's client config.
func mustTLSPair(tb testing.TB) (server, client *tls.Config) {
	tb.Helper()
	p := pkitest.New(tb)
	return p.ServerTLS(), p.ClientTLS(p.Envoy("site-1"))
}

// mustGRPCDirector serves a director that accepts every shard, with TLS if
// cfg is set.
func mustGRPCDirector(tb testing.TB, cfg *tls.Config) string {
	tb.Helper()
	return pkitest.GRPCServer(tb, cfg, func(s *grpc.Server) {
		directorpb.RegisterDirectorServer(s, director{f: &fakeDirector{}})
	})
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
		{"admin port", pkitest.AdminPort(t, nil), nil, "if it is the director's admin port (fladmin's), point --director at its gRPC port"},
		{"admin port with TLS", pkitest.AdminPort(t, serverTLS), clientTLS, "speaks TLS but not HTTP/2 (gRPC): it is likely the director's admin port"},
		{"TLS client, plaintext gRPC port", mustGRPCDirector(t, nil), clientTLS, "does not speak TLS: if the director serves without TLS, leave out --tls-ca"},
		{"TLS client, plaintext admin port", pkitest.AdminPort(t, nil), clientTLS, "does not speak TLS"},
		{"plaintext client, TLS gRPC port", mustGRPCDirector(t, serverTLS), nil, "if it serves TLS, give --tls-ca, --tls-cert and --tls-key"},
		{"plaintext client, server sends a TLS alert", pkitest.AlertServer(t), nil, "if it serves TLS, give --tls-ca, --tls-cert and --tls-key"},
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
		Name:      "site-1",
		Directors: []string{pkitest.AdminPort(t, nil)},
		ShardDir:  t.TempDir(),
		WorkDir:   filepath.Join(t.TempDir(), "work"),
		AllowRoot: true,
		Logger:    slog.New(slog.NewTextHandler(&logs, nil)),
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
