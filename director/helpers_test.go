package director

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/fedplane/fedplane/api/aggregatorpb"
	"github.com/fedplane/fedplane/api/directorpb"
)

// fakeClock is a settable clock, so liveness tests need no sleeps.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// testCfg is a Config for tests: a temp data dir, a fake clock, fixed shapes.
func testCfg(tb testing.TB, clock *fakeClock) Config {
	tb.Helper()
	return Config{
		DataDir:           tb.TempDir(),
		SampleShape:       []string{"28", "28"},
		TargetShape:       []string{"1"},
		HealthCheckPeriod: 10 * time.Second,
		Now:               clock.Now,
	}
}

func mustNew(tb testing.TB, cfg Config) *Director {
	tb.Helper()
	d, err := New(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(func() { d.Close() })
	return d
}

// clients are the two OpenFL service clients over one connection.
type clients struct {
	dir directorpb.DirectorClient
	agg aggregatorpb.AggregatorClient
}

// mustServe serves d in process on a bufconn listener until the test ends,
// and returns the listener to dial.
func mustServe(tb testing.TB, d *Director) *bufconn.Listener {
	tb.Helper()
	lis := bufconn.Listen(1 << 20)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Serve(ctx, lis, nil) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Errorf("Serve: %v", err)
		}
	})
	return lis
}

// mustServeBufconn serves d in process over bufconn until the test ends.
func mustServeBufconn(tb testing.TB, d *Director) clients {
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

func shard(name string, samples uint64, sample, target []string) *directorpb.UpdateShardInfoRequest {
	return &directorpb.UpdateShardInfoRequest{ShardInfo: &directorpb.ShardInfo{
		NodeInfo:         &directorpb.NodeInfo{Name: name},
		ShardDescription: "shard of " + name,
		NSamples:         samples,
		SampleShape:      sample,
		TargetShape:      target,
	}}
}
