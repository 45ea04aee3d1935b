package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"time"

	"google.golang.org/grpc"

	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/api/transport"
)

// serveNoopFlag makes fedbench a no-op Director service on the given
// loopback address instead of running figures: the process the idle-cpu
// floor measures, started by fedbench itself.
const serveNoopFlag = "serve-noop"

// serveNoop serves the no-op director on addr, which must be on loopback,
// until ctx ends.
func serveNoop(ctx context.Context, addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("-%s %s: want a loopback address", serveNoopFlag, addr)
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	s := grpc.NewServer(transport.ServerOptions()...)
	directorpb.RegisterDirectorServer(s, newNoopDirector())
	go func() {
		<-ctx.Done()
		s.Stop()
	}()
	return s.Serve(lis)
}

// noopProc is a child fedbench serving the no-op director.
type noopProc struct {
	cmd  *exec.Cmd
	addr string
	done chan struct{}
}

// startNoop starts fedbench -serve-noop on a free loopback port and waits
// until it accepts connections.
func startNoop(ctx context.Context) (*noopProc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	p := &noopProc{addr: addr, done: make(chan struct{})}
	p.cmd = exec.Command(self, "-"+serveNoopFlag, addr)
	p.cmd.Stderr = os.Stderr
	p.cmd.SysProcAttr = childAttr()
	if err := p.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	deadline := time.Now().Add(readyTimeout)
	for !dialOK(addr) {
		select {
		case <-p.done:
			return nil, fmt.Errorf("fedbench -%s exited early", serveNoopFlag)
		case <-ctx.Done():
			p.stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("fedbench -%s not serving after %v", serveNoopFlag, readyTimeout)
		}
	}
	return p, nil
}

func (p *noopProc) pid() int { return p.cmd.Process.Pid }

func (p *noopProc) stop() {
	p.cmd.Process.Kill()
	<-p.done
}
