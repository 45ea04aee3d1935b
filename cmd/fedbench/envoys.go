package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/api/transport"
)

// rpcTimeout bounds every unary call a simulated envoy makes.
const rpcTimeout = 30 * time.Second

// dial opens the i-th plaintext client connection to a loopback gRPC
// address with the envoy's transport options (transport.DialOptions), from
// a loopback source address of its own (127.0.X.Y, all of 127/8 is
// loopback on Linux): without TLS the director tells callers apart by
// their host, and simulated envoys are as many hosts as real ones.
func dial(addr string, i int) (*grpc.ClientConn, error) {
	src := &net.TCPAddr{IP: net.IPv4(127, 0, byte(1+i/254), byte(1+i%254))}
	dialer := func(ctx context.Context, target string) (net.Conn, error) {
		d := net.Dialer{LocalAddr: src}
		return d.DialContext(ctx, "tcp", target)
	}
	return grpc.NewClient(addr, append(transport.DialOptions(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(dialer))...)
}

// envoyName is the i-th simulated envoy's name; zero-padded so that names
// sort as numbers do.
func envoyName(i int) string { return fmt.Sprintf("bench-envoy-%05d", i) }

// fleet is n simulated envoys: envoy i talks through clients[i%len(clients)].
type fleet struct {
	names   []string
	conns   []*grpc.ClientConn
	clients []directorpb.DirectorClient
}

// dialFleet makes n envoys sharing conns connections to addr.
func dialFleet(addr string, n, conns int) (*fleet, error) {
	f := &fleet{}
	for i := range n {
		f.names = append(f.names, envoyName(i))
	}
	for i := range min(conns, n) {
		c, err := dial(addr, i)
		if err != nil {
			f.close()
			return nil, err
		}
		f.conns = append(f.conns, c)
		f.clients = append(f.clients, directorpb.NewDirectorClient(c))
	}
	return f, nil
}

func (f *fleet) close() {
	for _, c := range f.conns {
		c.Close()
	}
}

func (f *fleet) client(i int) directorpb.DirectorClient { return f.clients[i%len(f.clients)] }

// register sends every envoy's UpdateShardInfo, inflight at a time.
func (f *fleet) register(ctx context.Context, inflight int) error {
	return forEach(ctx, len(f.names), inflight, func(ctx context.Context, i int) error {
		ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
		defer cancel()
		resp, err := f.client(i).UpdateShardInfo(ctx, &directorpb.UpdateShardInfoRequest{ShardInfo: &directorpb.ShardInfo{
			NodeInfo:         &directorpb.NodeInfo{Name: f.names[i]},
			ShardDescription: "fedbench simulated shard",
			NSamples:         1000,
		}})
		if err != nil {
			return fmt.Errorf("register %s: %w", f.names[i], err)
		}
		if !resp.GetAccepted() {
			return fmt.Errorf("register %s: shard refused", f.names[i])
		}
		return nil
	})
}

// heartbeat sends envoy i's UpdateEnvoyStatus.
func (f *fleet) heartbeat(ctx context.Context, i int) error {
	ctx, cancel := context.WithTimeout(ctx, rpcTimeout)
	defer cancel()
	if _, err := f.client(i).UpdateEnvoyStatus(ctx, &directorpb.UpdateEnvoyStatusRequest{Name: f.names[i]}); err != nil {
		return fmt.Errorf("heartbeat %s: %w", f.names[i], err)
	}
	return nil
}

// forEach calls fn(i) for i in [0, n) from at most inflight goroutines and
// returns the first error, after which it starts no more calls.
func forEach(ctx context.Context, n, inflight int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(inflight, n) {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(ctx, i); err != nil {
					cancel(err)
					return
				}
			}
		})
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return ctx.Err()
}

// pacer heartbeats every envoy of a fleet once per period, envoy i at
// offset i·period/n, as a federation of envoys on their own clocks would.
type pacer struct {
	cancel  context.CancelFunc
	wg      sync.WaitGroup
	sent    atomic.Int64
	failed  atomic.Int64
	late    atomic.Int64 // heartbeats that waited for a free worker
	err     atomic.Pointer[error]
	once    sync.Once
	stopErr error
}

// paceTick is how often the pacer hands out the heartbeats that fell due.
const paceTick = 10 * time.Millisecond

// pace starts heartbeating f with at most workers calls in flight, until
// stop is called.
func (f *fleet) pace(ctx context.Context, period time.Duration, workers int) *pacer {
	ctx, cancel := context.WithCancel(ctx)
	p := &pacer{cancel: cancel}
	n := len(f.names)
	due := make(chan int, workers)
	for range workers {
		p.wg.Go(func() {
			for i := range due {
				if err := f.heartbeat(ctx, i); err != nil {
					if ctx.Err() == nil {
						p.failed.Add(1)
						p.err.CompareAndSwap(nil, &err)
					}
					continue
				}
				p.sent.Add(1)
			}
		})
	}
	p.wg.Go(func() {
		defer close(due)
		t := time.NewTicker(paceTick)
		defer t.Stop()
		start := time.Now()
		var handed int64
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			upTo := int64(time.Since(start) * time.Duration(n) / period)
			for ; handed < upTo; handed++ {
				select {
				case due <- int(handed % int64(n)):
				default:
					p.late.Add(1)
					select {
					case due <- int(handed % int64(n)):
					case <-ctx.Done():
						return
					}
				}
			}
		}
	})
	return p
}

// stop ends heartbeating and returns the first error a heartbeat met. It
// may be called more than once.
func (p *pacer) stop() error {
	p.once.Do(func() {
		p.cancel()
		p.wg.Wait()
		if e := p.err.Load(); e != nil {
			p.stopErr = fmt.Errorf("%d heartbeats failed, the first: %w", p.failed.Load(), *e)
		}
	})
	return p.stopErr
}
