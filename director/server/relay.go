package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/fedplane/fedplane/api"
)

// Switch is a port of a director replica. A standby relays each connection
// it accepts, bytes unread, to the same port of the replica that holds the
// coordinator lease; once the replica holds the lease itself, Serve hands
// the connections to its own servers. TLS ends at the coordinator, so a
// client's identity reaches it intact: the standby sees ciphertext only.
type Switch struct {
	lis  net.Listener
	name string // the port, for logs: "grpc", "admin"
	log  *slog.Logger
	// slots caps the connections relayed at once; one past it is closed.
	slots chan struct{}
	// patience is how long a connection waits for a coordinator
	// (relayPatience).
	patience time.Duration

	mu     sync.Mutex
	target func() string // where to relay, "" when no coordinator is known
	serve  *chanListener // set by Serve: connections go there
	conns  map[net.Conn]struct{}
	closed bool
}

// DefaultRelayConns caps the connections one port of a standby relays at once.
const DefaultRelayConns = 20000

// relayDialTimeout bounds the dial to the coordinator.
const relayDialTimeout = 5 * time.Second

// NewSwitch relays lis's connections to target() until Serve is called.
// Run must be running for anything to be accepted.
func NewSwitch(lis net.Listener, name string, target func() string, maxConns int, log *slog.Logger) *Switch {
	if maxConns <= 0 {
		maxConns = DefaultRelayConns
	}
	return &Switch{lis: lis, name: name, log: log, target: target, slots: make(chan struct{}, maxConns),
		patience: relayPatience, conns: map[net.Conn]struct{}{}}
}

// Addr is the address the switch accepts on.
func (s *Switch) Addr() net.Addr { return s.lis.Addr() }

// Run accepts until ctx ends, then closes the listener and every relayed
// connection, and returns.
func (s *Switch) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.lis.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer func() {
		s.mu.Lock()
		s.closed = true
		for c := range s.conns {
			c.Close()
		}
		serve := s.serve
		s.mu.Unlock()
		if serve != nil {
			serve.Close()
		}
		wg.Wait()
	}()
	var delay time.Duration // after a failed accept
	for {
		c, err := s.lis.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Out of descriptors, say: wait and accept again, as
			// net/http does, rather than stop serving the port.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("replica port: accept failed; retrying", api.LogPort, s.name, api.LogRetryIn, delay, api.LogErr, err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(delay):
			}
			continue
		}
		delay = 0
		s.mu.Lock()
		serve := s.serve
		s.mu.Unlock()
		if serve != nil {
			serve.push(c)
			continue
		}
		select {
		case s.slots <- struct{}{}:
		default:
			s.log.Warn("standby: too many connections relayed; closing one", api.LogPort, s.name, api.LogAddr, c.RemoteAddr().String())
			c.Close()
			continue
		}
		wg.Go(func() {
			defer func() { <-s.slots }()
			s.relay(ctx, c)
		})
	}
}

// Serve stops relaying new connections and returns the listener the
// replica's own server accepts them on. Connections relayed already go on
// until either end closes them.
func (s *Switch) Serve() net.Listener {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.serve == nil {
		s.serve = &chanListener{addr: s.lis.Addr(), conns: make(chan net.Conn), done: make(chan struct{})}
		if s.closed {
			s.serve.Close()
		}
	}
	return s.serve
}

// relay pipes c to the coordinator and back, until either side ends.
// While no coordinator answers (one died, and its lease has not passed on
// yet) it keeps the client waiting and tries again, for up to
// patience; if this replica becomes the coordinator meanwhile, its
// own server takes the connection.
func (s *Switch) relay(ctx context.Context, c net.Conn) {
	up, local := s.dialCoordinator(ctx)
	if local != nil {
		local.push(c)
		return
	}
	defer c.Close()
	if up == nil {
		return // no coordinator came: the client retries, as after any cut
	}
	defer up.Close()
	if !s.track(c, up) {
		return
	}
	defer s.untrack(c, up)
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		io.Copy(dst, src)
		if cw, ok := dst.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite() // pass the half-close on
		} else {
			dst.Close()
		}
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	<-done
}

// relayPatience is how long a relayed connection waits for a coordinator.
const relayPatience = 30 * time.Second

// relayRetry is the pause between tries to reach a coordinator.
const relayRetry = 100 * time.Millisecond

// dialCoordinator connects to the coordinator, trying again while none
// answers; it returns the local listener instead once Serve was called.
func (s *Switch) dialCoordinator(ctx context.Context) (net.Conn, *chanListener) {
	deadline := time.Now().Add(s.patience)
	for {
		s.mu.Lock()
		local := s.serve
		s.mu.Unlock()
		if local != nil {
			return nil, local
		}
		if target := s.target(); target != "" {
			d := net.Dialer{Timeout: relayDialTimeout, KeepAlive: 30 * time.Second}
			up, err := d.DialContext(ctx, "tcp", target)
			if err == nil {
				return up, nil
			}
			s.log.Debug("standby: coordinator unreachable", api.LogPort, s.name, api.LogAddr, target, api.LogErr, err)
		}
		if time.Now().After(deadline) {
			return nil, nil
		}
		select {
		case <-ctx.Done():
			return nil, nil
		case <-time.After(relayRetry):
		}
	}
}

func (s *Switch) track(cs ...net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	for _, c := range cs {
		s.conns[c] = struct{}{}
	}
	return true
}

func (s *Switch) untrack(cs ...net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range cs {
		delete(s.conns, c)
	}
}

// chanListener is a net.Listener fed by a Switch.
type chanListener struct {
	addr  net.Addr
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func (l *chanListener) push(c net.Conn) {
	select {
	case l.conns <- c:
	case <-l.done:
		c.Close()
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }
