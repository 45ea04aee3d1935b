package admin

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/director/directortest"
	"github.com/fedplane/fedplane/pki"
	"github.com/fedplane/fedplane/pki/pkitest"
)

func TestWrongPortReply(t *testing.T) {
	clientHello := []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01}
	tests := []struct {
		name     string
		first    []byte
		want     string // in msg; "" for not ok
		wantTLS  string // plaintextOnTLSReply's; "" for not ok
		wantPeer wrongPeer
	}{
		{"gRPC preface", []byte(http2.ClientPreface), "got a gRPC connection", "gRPC connection in the clear", peerGRPC},
		{"gRPC preface start", []byte("PRI "), "--grpc-listen", "--grpc-listen", peerGRPC},
		{"gRPC record header", []byte("PRI *"), "--grpc-listen", "with --tls-ca, --tls-cert and --tls-key", peerGRPC},
		{"TLS client hello", clientHello, "serves without TLS, but got a TLS handshake", "", peerTLS},
		{"TLS 1.0 record", []byte{0x16, 0x03, 0x00, 0x00}, "leave out fladmin's --tls-ca", "", peerTLS},
		{"HTTP GET", []byte("GET / HTTP/1.1\r\n"), "not HTTP", "serves TLS and FLARE's admin protocol", peerHTTP},
		{"HTTP POST", []byte("POST"), "not HTTP", "not HTTP", peerHTTP},
		{"admin text request", []byte(`{"time": "2026`), "", "request came in the clear", peerAdmin},
		{"admin text after a space", []byte(" \n{\""), "", "give fladmin --tls-ca", peerAdmin},
		{"admin upload", []byte{adminproto.BinaryMarker, 0, 0, 0, 42}, "", "request came in the clear", peerAdmin},
		{"garbage", []byte{0xff, 0xfe, 0x00, 0x01}, "", "", peerOther},
		{"TLS record of another type", []byte{0x17, 0x03, 0x03, 0x00}, "", "", peerOther},
		{"too short for PRI", []byte("PR"), "", "", peerOther},
		{"nothing", nil, "", "", peerOther},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := peerOf(tt.first); got != tt.wantPeer {
				t.Errorf("peerOf: got %v, want %v", got, tt.wantPeer)
			}
			msg, ok := wrongPortReply(tt.first)
			if ok != (tt.want != "") || !strings.Contains(msg, tt.want) {
				t.Errorf("wrongPortReply: got %q, %v; want one with %q", msg, ok, tt.want)
			}
			msg, ok = plaintextOnTLSReply(tt.first)
			if ok != (tt.wantTLS != "") || !strings.Contains(msg, tt.wantTLS) {
				t.Errorf("plaintextOnTLSReply: got %q, %v; want one with %q", msg, ok, tt.wantTLS)
			}
		})
	}
}

func TestGRPCMessage(t *testing.T) {
	if got, want := grpcMessage("50% of é\n"), "50%25 of %C3%A9%0A"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// wrongPortServer is the admin listener wired as wrongport.go says: with
// TLS (tlsCfg set) it answers clients whose handshake fails on a record in
// the clear, without TLS clients whose first bytes wrongPortReply knows.
// Anything else gets an ordinary admin reply, "ok".
// wrongPortServer serves a director's admin channel on loopback, over TLS
// when tlsCfg is set, and returns its address.
func wrongPortServer(tb testing.TB, tlsCfg *tls.Config) string {
	tb.Helper()
	d := directortest.New(tb, directortest.Config(tb, directortest.NewClock()))
	c, _ := mustServeAdmin(tb, d, Config{TLS: tlsCfg, IdleTimeout: 5 * time.Second})
	return c.Addr
}

// mustPKI makes a federation CA and returns the director's server config
// and an admin's client config, as the binaries build them.
func mustPKI(tb testing.TB) (server, client *tls.Config) {
	tb.Helper()
	p := pkitest.New(tb)
	client = p.ClientTLS(p.Admin("alice", pki.RoleProjectAdmin))
	client.NextProtos = []string{adminproto.ALPN}
	return p.ServerTLS(), client
}

// TestAnswerWrongPort runs real clients against the admin listener, in the
// clear and over TLS, and checks what each client reports.
func TestAnswerWrongPort(t *testing.T) {
	serverTLS, clientTLS := mustPKI(t)
	plain := wrongPortServer(t, nil)
	withTLS := wrongPortServer(t, serverTLS)

	grpcCall := func(t *testing.T, addr string) error {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_, err = directorpb.NewDirectorClient(conn).UpdateShardInfo(ctx, &directorpb.UpdateShardInfoRequest{})
		return err
	}
	adminCall := func(t *testing.T, addr string, tlsCfg *tls.Config) (*adminproto.Message, error) {
		c := &adminproto.Client{Addr: addr, Timeout: 5 * time.Second}
		if tlsCfg != nil {
			d := &tls.Dialer{Config: tlsCfg}
			c.Dial = d.DialContext
		}
		return c.Do(context.Background(), adminproto.NewRequest("check_status"))
	}
	httpGet := func(t *testing.T, url string) (int, string) {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}

	t.Run("envoy on the admin port", func(t *testing.T) {
		err := grpcCall(t, plain)
		if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "point envoys and frontends at the director's gRPC port") {
			t.Fatalf("got %v, want Unavailable saying where to point envoys", err)
		}
	})
	t.Run("envoy in the clear on the TLS admin port", func(t *testing.T) {
		err := grpcCall(t, withTLS)
		if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "gRPC connection in the clear") {
			t.Fatalf("got %v, want Unavailable saying where to point envoys", err)
		}
	})
	t.Run("fladmin with TLS on the plaintext admin port", func(t *testing.T) {
		_, err := adminCall(t, plain, clientTLS)
		var wp *adminproto.WrongPortError
		if !errors.As(err, &wp) || wp.Peer != adminproto.PeerPlaintext {
			t.Fatalf("got %v, want a WrongPortError for a server without TLS", err)
		}
	})
	t.Run("fladmin in the clear on the TLS admin port", func(t *testing.T) {
		reply, err := adminCall(t, withTLS, nil)
		if err != nil || reply.Status() != adminproto.StatusError || !strings.Contains(reply.Info(), "give fladmin --tls-ca, --tls-cert and --tls-key") {
			t.Fatalf("got %v, %v; want an error reply asking for the --tls-* flags", reply, err)
		}
	})
	t.Run("fladmin on the plaintext admin port", func(t *testing.T) {
		reply, err := adminCall(t, plain, nil)
		if err != nil || reply.Status() != adminproto.StatusOK {
			t.Fatalf("got %v, %v; want ok", reply, err)
		}
	})
	t.Run("fladmin with TLS on the TLS admin port", func(t *testing.T) {
		reply, err := adminCall(t, withTLS, clientTLS)
		if err != nil || reply.Status() != adminproto.StatusOK {
			t.Fatalf("got %v, %v; want ok", reply, err)
		}
	})
	t.Run("curl on the plaintext admin port", func(t *testing.T) {
		code, body := httpGet(t, "http://"+plain+"/")
		if code != http.StatusBadRequest || !strings.Contains(body, "not HTTP") {
			t.Fatalf("got %d %q, want 400 saying the port is not HTTP", code, body)
		}
	})
	t.Run("curl in the clear on the TLS admin port", func(t *testing.T) {
		code, body := httpGet(t, "http://"+withTLS+"/")
		if code != http.StatusBadRequest || !strings.Contains(body, "serves TLS") {
			t.Fatalf("got %d %q, want 400 saying the port serves TLS", code, body)
		}
	})
}

// TestBusyOverTLS fills the only connection slot of a TLS admin port and
// checks that the next TLS client reads "busy" over TLS, rather than a
// reply in the clear that reads to it as a server without TLS.
func TestBusyOverTLS(t *testing.T) {
	serverTLS, clientTLS := mustPKI(t)
	d := directortest.New(t, directortest.Config(t, directortest.NewClock()))
	c, srv := mustServeAdmin(t, d, Config{TLS: serverTLS, MaxConns: 1, IdleTimeout: 30 * time.Second})
	// A handshake finished and a request unfinished keep the slot.
	hold, err := tls.Dial("tcp", c.Addr, clientTLS)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	if _, err := hold.Write([]byte(`{"data": [`)); err != nil {
		t.Fatal(err)
	}
	waitActive(t, srv, 1)
	dl := &tls.Dialer{Config: clientTLS}
	c.Dial = dl.DialContext
	deadline := time.Now().Add(10 * time.Second)
	for {
		reply, err := c.Do(context.Background(), adminproto.NewRequest(api.CmdCheckStatus))
		if err == nil && reply.Status() == adminproto.StatusError && strings.Contains(reply.Info(), "busy") {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("TLS client over the cap: got %v, %v; want a busy reply over TLS", reply, err)
		}
	}
}

// TestHandshakeTakesNoSlot: peers that open connections and never finish
// a TLS handshake do not keep a client from the only slot.
func TestHandshakeTakesNoSlot(t *testing.T) {
	serverTLS, clientTLS := mustPKI(t)
	d := directortest.New(t, directortest.Config(t, directortest.NewClock()))
	c, _ := mustServeAdmin(t, d, Config{TLS: serverTLS, MaxConns: 1, IdleTimeout: 30 * time.Second, HandshakeTimeout: time.Minute})
	for range 3 {
		stalled, err := net.Dial("tcp", c.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer stalled.Close()
	}
	dl := &tls.Dialer{Config: clientTLS}
	c.Dial = dl.DialContext
	reply, err := c.Do(context.Background(), adminproto.NewRequest(api.CmdCheckStatus))
	if err != nil || reply.Status() != adminproto.StatusOK {
		t.Fatalf("with handshakes stalled: got %v, %v; want ok", reply, err)
	}
}

// TestConnsPerAddr: one client address holding its share of connections
// is told it is busy; another address is served.
func TestConnsPerAddr(t *testing.T) {
	d := directortest.New(t, directortest.Config(t, directortest.NewClock()))
	c, _ := mustServeAdmin(t, d, Config{MaxConnsPerAddr: 2})
	for range 2 {
		hold, err := net.Dial("tcp", c.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer hold.Close()
		hold.Write([]byte(`{"data": [`)) // an unfinished request
	}
	reply, err := c.Do(context.Background(), adminproto.NewRequest(api.CmdCheckStatus))
	if err != nil || !strings.Contains(reply.Info(), "127.0.0.1 has 2 admin connections open") {
		t.Fatalf("a third connection of 127.0.0.1: got %v, %v; want busy for the address", reply, err)
	}
	other := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	c.Dial = other.DialContext
	reply, err = c.Do(context.Background(), adminproto.NewRequest(api.CmdCheckStatus))
	if err != nil || reply.Status() != adminproto.StatusOK {
		t.Fatalf("from 127.0.0.2: got %v, %v; want ok", reply, err)
	}
}

// TestWrongPortPeerIsBounded plays hostile gRPC-looking peers on the admin
// port: one announcing a 16 MiB HTTP/2 frame, which must be refused before
// it is read or allocated, and one trickling bytes, which must not keep its
// connection slot past one idle timeout.
func TestWrongPortPeerIsBounded(t *testing.T) {
	d := directortest.New(t, directortest.Config(t, directortest.NewClock()))
	t.Run("huge frame", func(t *testing.T) {
		c, _ := mustServeAdmin(t, d, Config{IdleTimeout: time.Minute})
		conn, err := net.Dial("tcp", c.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.Write([]byte(http2.ClientPreface))
		conn.Write([]byte{0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 1}) // DATA, 16 MiB, stream 1
		conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.Copy(io.Discard, conn); err != nil {
			t.Fatalf("the director kept reading a 16 MiB frame (%v); want the connection closed at its header", err)
		}
	})
	t.Run("trickle", func(t *testing.T) {
		c, _ := mustServeAdmin(t, d, Config{IdleTimeout: 500 * time.Millisecond})
		conn, err := net.Dial("tcp", c.Addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.Write([]byte(http2.ClientPreface))
		conn.Write([]byte{0, 0x3f, 0xff, 0, 0, 0, 0, 0, 1}) // DATA, 16 KiB - 1, stream 1: its bytes follow slowly
		closed := make(chan struct{})
		go func() { io.Copy(io.Discard, conn); close(closed) }()
		for range 100 { // 20 s of a byte every 200 ms
			select {
			case <-closed:
				return
			case <-time.After(200 * time.Millisecond):
				conn.Write([]byte{0})
			}
		}
		t.Fatal("a peer trickling a byte at a time kept its admin connection for 20 s with a 500 ms idle timeout")
	})
}
