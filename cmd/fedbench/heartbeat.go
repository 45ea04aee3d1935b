package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/api/transport"
	"github.com/fedplane/fedplane/director"
	"github.com/fedplane/fedplane/director/server"
)

// hbPeriod is the health-check period of the heartbeat figure's director.
const hbPeriod = 10 * time.Second

// noopDirector answers UpdateEnvoyStatus with a constant, and accepts every
// UpdateShardInfo: the floor of the heartbeat and idle-cpu figures.
type noopDirector struct {
	directorpb.UnimplementedDirectorServer
	resp *directorpb.UpdateEnvoyStatusResponse
}

func newNoopDirector() *noopDirector {
	return &noopDirector{resp: &directorpb.UpdateEnvoyStatusResponse{HealthCheckPeriod: durationpb.New(hbPeriod)}}
}

func (n *noopDirector) UpdateEnvoyStatus(context.Context, *directorpb.UpdateEnvoyStatusRequest) (*directorpb.UpdateEnvoyStatusResponse, error) {
	return n.resp, nil
}

func (n *noopDirector) UpdateShardInfo(context.Context, *directorpb.UpdateShardInfoRequest) (*directorpb.UpdateShardInfoResponse, error) {
	return &directorpb.UpdateShardInfoResponse{Accepted: true}, nil
}

// heartbeat is figure 1: heartbeats/s through an in-process director
// (director.New, server.Serve on a loopback listener) with N registered envoys,
// hbInflight calls in flight, against a no-op handler of the same method
// over loopback. Floor and director windows alternate so that both see the
// same machine.
func (b *bench) heartbeat(ctx context.Context) ([]row, error) {
	var rows []row
	for _, n := range b.cfg.hbEnvoys {
		r, err := b.heartbeatWith(ctx, n)
		if err != nil {
			return rows, fmt.Errorf("%d envoys: %w", n, err)
		}
		rows = append(rows, r)
	}
	return rows, nil
}

func (b *bench) heartbeatWith(ctx context.Context, n int) (row, error) {
	dir, err := b.dir(fmt.Sprintf("heartbeat-%d", n))
	if err != nil {
		return row{}, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	d, err := startInProcess(ctx, director.Config{DataDir: dir, HealthCheckPeriod: hbPeriod}, false)
	if err != nil {
		return row{}, err
	}
	defer d.stop()

	noop := grpc.NewServer(transport.ServerOptions()...)
	directorpb.RegisterDirectorServer(noop, newNoopDirector())
	noopLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return row{}, err
	}
	go noop.Serve(noopLis)
	defer noop.Stop()

	fd, err := dialFleet(d.addr, n, b.cfg.hbConns)
	if err != nil {
		return row{}, err
	}
	defer fd.close()
	fn, err := dialFleet(noopLis.Addr().String(), n, b.cfg.hbConns)
	if err != nil {
		return row{}, err
	}
	defer fn.close()

	t0 := time.Now()
	if err := fd.register(ctx, b.cfg.hbInflight); err != nil {
		return row{}, err
	}
	b.logf("heartbeat: registered %d envoys in %v", n, time.Since(t0).Round(time.Millisecond))

	// Warm both paths (connections, pools, the scheduler's first run).
	warm := min(b.cfg.hbWindow, time.Second)
	if _, err := drive(ctx, fn, b.cfg.hbInflight, warm); err != nil {
		return row{}, fmt.Errorf("floor: %w", err)
	}
	if _, err := drive(ctx, fd, b.cfg.hbInflight, warm); err != nil {
		return row{}, err
	}
	var dirRate, noopRate, prevNoop float64
	for round := range b.cfg.hbRounds {
		r, err := drive(ctx, fn, b.cfg.hbInflight, b.cfg.hbWindow)
		if err != nil {
			return row{}, fmt.Errorf("floor: %w", err)
		}
		noopRate += r
		last := round == b.cfg.hbRounds-1
		stopProfile, err := b.startProfile(last, fmt.Sprintf("heartbeat-%d.pprof", n))
		if err != nil {
			return row{}, err
		}
		r, err = drive(ctx, fd, b.cfg.hbInflight, b.cfg.hbWindow)
		stopProfile()
		if err != nil {
			return row{}, err
		}
		dirRate += r
		b.logf("heartbeat: %d envoys, window %d: no-op %.0f/s, director %.0f/s", n, round+1, noopRate-prevNoop, r)
		prevNoop = noopRate
	}
	dirRate /= float64(b.cfg.hbRounds)
	noopRate /= float64(b.cfg.hbRounds)
	r := row{
		figure:   fmt.Sprintf("1. heartbeats/s, %s envoys, %d in flight (floor: no-op handler)", fmtCount(n), b.cfg.hbInflight),
		fedplane: fmt.Sprintf("%s/s", fmtCount(int(dirRate))),
		floor:    fmt.Sprintf("%s/s", fmtCount(int(noopRate))),
		ratio:    dirRate / noopRate,
	}
	r.goal = atLeast(r.ratio, 0.8)
	return r, nil
}

// inProcess is a director of this process (director.New) served by
// server.Serve on a loopback listener: the heartbeat figures measure the
// director's gRPC path without a process boundary of their own.
type inProcess struct {
	d    *director.Director
	addr string
	stop func()
}

// startInProcess opens a director with cfg and serves its gRPC port on
// 127.0.0.1. With run it also runs the director's background work
// (director.Run: liveness sweeps and flushes, the scheduler), as `director
// serve` does. stop ends it all and closes the director.
func startInProcess(ctx context.Context, cfg director.Config, run bool) (*inProcess, error) {
	d, err := director.New(ctx, cfg)
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		d.Close()
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { server.Serve(ctx, d, server.Config{}, lis, nil) })
	if run {
		wg.Go(func() { d.Run(ctx) })
	}
	return &inProcess{d: d, addr: lis.Addr().String(), stop: func() {
		cancel()
		wg.Wait()
		d.Close()
	}}, nil
}

// drive sends heartbeats from inflight goroutines, cycling over the fleet's
// envoys, for about d, and returns heartbeats per second.
func drive(ctx context.Context, f *fleet, inflight int, d time.Duration) (float64, error) {
	reqs := make([]*directorpb.UpdateEnvoyStatusRequest, len(f.names))
	for i, name := range f.names {
		reqs[i] = &directorpb.UpdateEnvoyStatusRequest{Name: name}
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var next, calls atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(d)
	for range inflight {
		wg.Go(func() {
			for ctx.Err() == nil && time.Now().Before(deadline) {
				i := int(next.Add(1)-1) % len(reqs)
				if _, err := f.client(i).UpdateEnvoyStatus(ctx, reqs[i]); err != nil {
					cancel(fmt.Errorf("heartbeat %s: %w", reqs[i].Name, err))
					return
				}
				calls.Add(1)
			}
		})
	}
	wg.Wait()
	took := time.Since(start)
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.Canceled) {
		return 0, err
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	return float64(calls.Load()) / took.Seconds(), nil
}

// startProfile starts an in-process CPU profile into name under -profile
// when on is true and profiling was asked for; the returned function stops
// it.
func (b *bench) startProfile(on bool, name string) (func(), error) {
	if !on || b.cfg.profile == "" {
		return func() {}, nil
	}
	f, err := os.Create(filepath.Join(b.cfg.profile, name))
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
