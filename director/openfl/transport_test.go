package openfl

import (
	"context"
	"io"
	"net"
	"sync"
	"testing"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/api/transport"
)

// frameLog parses the HTTP/2 frames one direction of a connection carries
// and counts them by type.
type frameLog struct {
	pw   *io.PipeWriter
	done chan struct{}
	mu   sync.Mutex
	n    map[http2.FrameType]int
}

func newFrameLog(preface bool) *frameLog {
	pr, pw := io.Pipe()
	l := &frameLog{pw: pw, done: make(chan struct{}), n: map[http2.FrameType]int{}}
	go func() {
		defer close(l.done)
		defer pr.Close()
		if preface {
			if _, err := io.ReadFull(pr, make([]byte, len(http2.ClientPreface))); err != nil {
				return
			}
		}
		fr := http2.NewFramer(nil, pr)
		fr.SetMaxReadFrameSize(1 << 24)
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			l.mu.Lock()
			l.n[f.Header().Type]++
			l.mu.Unlock()
		}
	}()
	return l
}

// counts returns the frames seen so far by type.
func (l *frameLog) counts() map[http2.FrameType]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[http2.FrameType]int, len(l.n))
	for t, n := range l.n {
		out[t] = n
	}
	return out
}

// loggedConn copies both directions of a connection into frame logs.
type loggedConn struct {
	net.Conn
	in, out *frameLog
}

func (c *loggedConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.in.pw.Write(p[:n])
	return n, err
}

func (c *loggedConn) Write(p []byte) (int, error) {
	c.out.pw.Write(p)
	return c.Conn.Write(p)
}

// TestHeartbeatFrames: with the envoy's transport options, a heartbeat is
// one request and one reply, nothing more. grpc-go's flow-control estimator
// (on unless both ends fix their windows, transport.ServerOptions/DialOptions)
// answered every request and every reply on a quiet connection with a
// WINDOW_UPDATE and a PING of its own, which tripled the director's
// syscalls per heartbeat.
func TestHeartbeatFrames(t *testing.T) {
	d := mustNew(t, testCfg(t, newFakeClock()))
	lis := mustServe(t, d)
	ctx := context.Background()

	var conn *loggedConn
	cc, err := grpc.NewClient("passthrough:///bufnet", append(transport.DialOptions(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			c, err := lis.DialContext(ctx)
			if err != nil {
				return nil, err
			}
			conn = &loggedConn{Conn: c, in: newFrameLog(false), out: newFrameLog(true)}
			return conn, nil
		}))...)
	if err != nil {
		t.Fatal(err)
	}
	c := directorpb.NewDirectorClient(cc)
	if _, err := c.UpdateShardInfo(ctx, shard("envoy-1", 10, []string{"28", "28"}, []string{"1"})); err != nil {
		t.Fatal(err)
	}
	// Let the connection's start (SETTINGS and their acks) pass.
	const beats = 20
	if _, err := c.UpdateEnvoyStatus(ctx, &directorpb.UpdateEnvoyStatusRequest{Name: "envoy-1"}); err != nil {
		t.Fatal(err)
	}
	in0, out0 := conn.in.counts(), conn.out.counts()
	for range beats {
		if _, err := c.UpdateEnvoyStatus(ctx, &directorpb.UpdateEnvoyStatusRequest{Name: "envoy-1"}); err != nil {
			t.Fatal(err)
		}
	}
	cc.Close()
	conn.in.pw.Close()
	conn.out.pw.Close()
	<-conn.in.done
	<-conn.out.done

	in, out := conn.in.counts(), conn.out.counts()
	for _, tt := range []struct {
		dir        string
		got, start map[http2.FrameType]int
		typ        http2.FrameType
		want       int
	}{
		{"director to envoy", in, in0, http2.FrameHeaders, 2 * beats}, // headers and trailers
		{"director to envoy", in, in0, http2.FrameData, beats},
		{"director to envoy", in, in0, http2.FramePing, 0},
		{"director to envoy", in, in0, http2.FrameWindowUpdate, 0},
		{"envoy to director", out, out0, http2.FrameHeaders, beats},
		{"envoy to director", out, out0, http2.FrameData, beats},
		{"envoy to director", out, out0, http2.FramePing, 0},
		{"envoy to director", out, out0, http2.FrameWindowUpdate, 0},
	} {
		if got := tt.got[tt.typ] - tt.start[tt.typ]; got != tt.want {
			t.Errorf("%s, %d heartbeats: got %d %v frames, want %d", tt.dir, beats, got, tt.typ, tt.want)
		}
	}
}
