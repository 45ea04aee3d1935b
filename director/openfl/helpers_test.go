package openfl

import (
	"context"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/fedplane/fedplane/api/aggregatorpb"
	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/director"
	"github.com/fedplane/fedplane/director/directortest"
)

var (
	newFakeClock = directortest.NewClock
	testCfg      = directortest.Config
	mustNew      = directortest.New
	shard        = directortest.Shard
)

// clients are the two OpenFL service clients over one connection.
type clients struct {
	dir directorpb.DirectorClient
	agg aggregatorpb.AggregatorClient
}

// mustServe serves d's OpenFL services in process on a bufconn listener,
// and runs d's background work, until the test ends; it returns the
// listener to dial.
func mustServe(tb testing.TB, d *director.Director) *bufconn.Listener {
	tb.Helper()
	lis := bufconn.Listen(1 << 20)
	s := NewServer(d, Config{})
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { d.Run(ctx); close(ran) }()
	served := make(chan error, 1)
	go func() { served <- s.Serve(lis) }()
	tb.Cleanup(func() {
		d.Drain()
		s.Stop()
		if err := <-served; err != nil {
			tb.Errorf("Serve: %v", err)
		}
		cancel()
		<-ran
	})
	return lis
}

// mustServeBufconn serves d in process over bufconn until the test ends.
func mustServeBufconn(tb testing.TB, d *director.Director) clients {
	tb.Helper()
	conn := mustDial(tb, mustServe(tb, d))
	return clients{dir: directorpb.NewDirectorClient(conn), agg: aggregatorpb.NewAggregatorClient(conn)}
}

// mustDial opens a plaintext client connection over lis, closed when the
// test ends.
func mustDial(tb testing.TB, lis *bufconn.Listener) *grpc.ClientConn {
	tb.Helper()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return conn
}
