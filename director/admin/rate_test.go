package admin

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/api"
)

// TestRateConn reads from peers that send at different rates: a trickle
// below the minimum is cut off after a window of waiting, a steady sender
// and a sender that pauses while the reader is busy elsewhere are not.
func TestRateConn(t *testing.T) {
	tests := []struct {
		name     string
		chunk    int
		every    time.Duration
		n        int
		wantSlow bool
	}{
		{name: "trickle", chunk: 1, every: 20 * time.Millisecond, n: 100, wantSlow: true},
		{name: "steady", chunk: 4 << 10, every: 5 * time.Millisecond, n: 100},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			server, client := net.Pipe()
			defer server.Close()
			go func() {
				defer client.Close()
				b := make([]byte, tt.chunk)
				for range tt.n {
					if _, err := client.Write(b); err != nil {
						return
					}
					time.Sleep(tt.every)
				}
			}()
			c := newRateConn(server, 10<<10, 200*time.Millisecond)
			_, err := io.Copy(io.Discard, c)
			if got := errors.Is(err, errTooSlow); got != tt.wantSlow {
				t.Fatalf("copy: %v; want too slow: %v", err, tt.wantSlow)
			}
		})
	}
	t.Run("reader busy", func(t *testing.T) {
		// The peer waits for the reader, not the other way round: the
		// time the reader spends away does not count against the peer.
		server, client := net.Pipe()
		defer server.Close()
		go func() {
			defer client.Close()
			client.Write(make([]byte, 64<<10))
		}()
		c := newRateConn(server, 10<<10, 100*time.Millisecond)
		buf := make([]byte, 1<<10)
		for {
			_, err := c.Read(buf)
			if errors.Is(err, io.EOF) {
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			time.Sleep(5 * time.Millisecond) // busy writing it somewhere slow
		}
	})
}

// TestSlowRequestDropped holds an admin connection with a request that
// never ends, a byte at a time: the idle timeout never fires, the rate
// check drops it.
func TestSlowRequestDropped(t *testing.T) {
	d := mustNew(t, testCfg(t, newFakeClock()))
	c, _ := mustServeAdmin(t, d, Config{IdleTimeout: time.Minute, MinRate: 1 << 10, RateWindow: 300 * time.Millisecond})
	conn, err := net.Dial("tcp", c.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	cut := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, conn) // the reply, then EOF
		cut <- err
	}()
	for i := 0; ; i++ {
		select {
		case err := <-cut:
			if err != nil {
				t.Fatalf("connection ended with %v, want the director to close it", err)
			}
			return
		case <-time.After(20 * time.Millisecond):
		}
		if _, err := conn.Write([]byte("l")); err != nil {
			return // closed by the director
		}
		if i > 1000 {
			t.Fatal("a trickling request was never dropped")
		}
	}
}

// TestDownloadsBounded refuses a download while the caller has as many in
// progress as one caller may.
func TestDownloadsBounded(t *testing.T) {
	d := mustNew(t, testCfg(t, newFakeClock()))
	c, _ := mustServeAdmin(t, d, Config{})
	reply := submit(t, c, zipOf(t, writeJobDir(t, testManifest)))
	id, _ := reply.Meta[api.MetaJobID].(string)
	for range 2 {
		release, err := d.EnterDownload("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		defer release()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	reply, err := c.Do(ctx, adminproto.NewRequest(api.CmdDownloadJob+" "+id))
	if err != nil {
		t.Fatal(err)
	}
	if reply.Status() != adminproto.StatusError || !strings.Contains(reply.Info(), "downloads in progress, the most one caller may have") {
		t.Fatalf("download past the bound: %s %q", reply.Status(), reply.Info())
	}
}
