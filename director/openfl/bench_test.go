package openfl

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/api/transport"
	"github.com/fedplane/fedplane/director"
	"github.com/fedplane/fedplane/director/directortest"
)

// noopDirector answers UpdateEnvoyStatus with a constant: the floor that
// BenchmarkHeartbeat/tcp is measured against.
type noopDirector struct {
	directorpb.UnimplementedDirectorServer
	resp *directorpb.UpdateEnvoyStatusResponse
}

func (n *noopDirector) UpdateEnvoyStatus(context.Context, *directorpb.UpdateEnvoyStatusRequest) (*directorpb.UpdateEnvoyStatusResponse, error) {
	return n.resp, nil
}

const benchEnvoys = 1000

// benchDirector is a director with n registered envoys on the real clock.
func benchDirector(b *testing.B, n int) *director.Director {
	b.Helper()
	return directortest.WithEnvoys(b, n)
}

// serveTCP serves s on a loopback port and returns a client connection.
func serveTCP(b *testing.B, s *grpc.Server) *grpc.ClientConn {
	b.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go s.Serve(lis)
	b.Cleanup(s.Stop)
	conn, err := grpc.NewClient(lis.Addr().String(), append(transport.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { conn.Close() })
	return conn
}

// runHeartbeats sends heartbeats from parallel goroutines, each cycling over
// the registered names, and reports heartbeats/s.
func runHeartbeats(b *testing.B, beat func(ctx context.Context, req *directorpb.UpdateEnvoyStatusRequest) error) {
	b.ReportAllocs()
	b.SetParallelism(8) // 16 goroutines on 2 cores: calls in flight as envoys make them
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		i := 0
		for pb.Next() {
			req := &directorpb.UpdateEnvoyStatusRequest{Name: fmt.Sprintf("envoy-%05d", i%benchEnvoys)}
			if err := beat(ctx, req); err != nil {
				b.Error(err)
				return
			}
			i++
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "heartbeats/s")
}

// BenchmarkHeartbeat measures the heartbeat path: in process (service method,
// registry, no network), through the director over loopback TCP, and through
// a no-op handler of the same method over loopback TCP (the floor). Compare
// tcp with tcp-noop: the goal is at least 0.8 of the floor.
func BenchmarkHeartbeat(b *testing.B) {
	b.Run("inprocess", func(b *testing.B) {
		d := benchDirector(b, benchEnvoys)
		svc := &directorService{service: &service{d: d, log: d.Config().Logger, period: durationpb.New(d.Config().HealthCheckPeriod)}}
		runHeartbeats(b, func(ctx context.Context, req *directorpb.UpdateEnvoyStatusRequest) error {
			_, err := svc.UpdateEnvoyStatus(ctx, req)
			return err
		})
	})
	b.Run("tcp", func(b *testing.B) {
		d := benchDirector(b, benchEnvoys)
		c := directorpb.NewDirectorClient(serveTCP(b, NewServer(d, Config{})))
		runHeartbeats(b, func(ctx context.Context, req *directorpb.UpdateEnvoyStatusRequest) error {
			_, err := c.UpdateEnvoyStatus(ctx, req)
			return err
		})
	})
	b.Run("tcp-noop", func(b *testing.B) {
		s := grpc.NewServer(transport.ServerOptions()...)
		directorpb.RegisterDirectorServer(s, &noopDirector{resp: &directorpb.UpdateEnvoyStatusResponse{HealthCheckPeriod: durationpb.New(10 * time.Second)}})
		c := directorpb.NewDirectorClient(serveTCP(b, s))
		runHeartbeats(b, func(ctx context.Context, req *directorpb.UpdateEnvoyStatusRequest) error {
			_, err := c.UpdateEnvoyStatus(ctx, req)
			return err
		})
	})
}
