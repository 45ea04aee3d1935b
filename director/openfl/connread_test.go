//go:build unix

package openfl

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"runtime"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"

	"github.com/fedplane/fedplane/api/transport"
)

// TestReadOnReady reads a tracked connection as gRPC does: bytes the peer
// wrote, in buffers from the pool, then io.EOF once the peer has closed.
func TestReadOnReady(t *testing.T) {
	tests := []struct {
		name string
		sent []byte
		size int // of the buffer asked for
	}{
		{"one frame header", []byte{0, 0, 4, 8, 0, 0, 0, 0, 0}, 32 << 10},
		{"more than a buffer", bytes.Repeat([]byte("fedplane"), 1024), 1 << 10},
		{"nothing", nil, 32 << 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			server, client := mustTrackedPair(t)
			if server.raw == nil {
				t.Fatal("a TCP connection is not read from its socket")
			}
			go func() {
				client.Write(tt.sent)
				client.Close()
			}()
			pool := mem.DefaultBufferPool()
			var got []byte
			for {
				buf, n, err := server.ReadOnReady(tt.size, pool)
				if n > 0 {
					if len(*buf) != tt.size {
						t.Fatalf("got a %d-byte buffer, want %d", len(*buf), tt.size)
					}
					got = append(got, (*buf)[:n]...)
					pool.Put(buf)
				}
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if n == 0 {
					t.Fatal("read nothing and no error")
				}
			}
			if !bytes.Equal(got, tt.sent) {
				t.Fatalf("read %d bytes, want the %d sent", len(got), len(tt.sent))
			}
		})
	}
}

// TestIdleConnHeap: an idle connection on a tracked listener costs about
// what one on a bare listener does, because gRPC does not pin a read
// buffer to it (connread_unix.go). Before, each held a 32 KiB one.
func TestIdleConnHeap(t *testing.T) {
	const conns = 200
	bare := idleConnHeap(t, conns, func(l net.Listener) net.Listener { return l })
	tracked := idleConnHeap(t, conns, Listener)
	t.Logf("heap per idle connection, both ends: bare %.1f KiB, tracked %.1f KiB", bare/1024, tracked/1024)
	if tracked-bare > 8<<10 {
		t.Fatalf("a tracked connection holds %.1f KiB more heap than a bare one, want under 8 (gRPC's read buffer is pinned again?)", (tracked-bare)/1024)
	}
}

// idleConnHeap returns the live heap per connection, client and server
// ends together, of conns ready connections to a gRPC server with the
// director's transport options on wrap(listener).
func idleConnHeap(t *testing.T, conns int, wrap func(net.Listener) net.Listener) float64 {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(transport.ServerOptions()...)
	go srv.Serve(wrap(lis))
	defer srv.Stop()
	before := liveHeap()
	var clients []*grpc.ClientConn
	defer func() {
		for _, c := range clients {
			c.Close()
		}
	}()
	for range conns {
		c, err := grpc.NewClient(lis.Addr().String(), append(transport.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
		c.Connect()
		for s := c.GetState(); s != connectivity.Ready; s = c.GetState() {
			if !c.WaitForStateChange(context.Background(), s) || s == connectivity.TransientFailure {
				t.Fatalf("connection %d: %v", len(clients), s)
			}
		}
	}
	return float64(liveHeap()-before) / float64(conns)
}

func liveHeap() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc)
}

// mustTrackedPair returns both ends of a TCP connection accepted through
// Listener.
func mustTrackedPair(tb testing.TB) (*trackedConn, net.Conn) {
	tb.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer lis.Close()
	client, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { client.Close() })
	c, err := Listener(lis).Accept()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c.(*trackedConn), client
}
