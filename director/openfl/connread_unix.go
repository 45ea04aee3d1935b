//go:build unix

package openfl

import (
	"io"
	"net"
	"syscall"

	"google.golang.org/grpc/mem"
)

// An idle connection should not pin a read buffer. gRPC's server reads
// each connection through a 32 KiB buffer (grpc.ReadBufferSize); on a bare
// *net.TCPConn it waits until the socket is readable and only then takes
// a buffer from its pool, giving it back once the frames in it are read.
// On any other net.Conn it keeps a bufio.Reader of its own for the
// connection's life, unless the connection has a ReadOnReady method of
// the shape below, which gRPC looks for (its internal
// transport/readyreader.Reader). Tracking connections (Listener) wraps
// them, which cost 32 KiB of heap per connected envoy, most of the
// director's memory with 10,000 of them; so trackedConn reads the way gRPC
// reads a bare TCP connection. TestIdleConnHeap holds gRPC to it: should a
// gRPC release stop asking for ReadOnReady, the buffers come back and the
// test fails.

// rawReader is a tracked connection's socket, read without a buffer
// pinned while it waits.
type rawReader struct {
	raw syscall.RawConn
	// The call's state lives here, and read is made once, so that a read
	// allocates nothing.
	size int
	pool mem.BufferPool
	buf  *[]byte
	n    int
	err  error
	read func(fd uintptr) bool
}

// newRawReader returns the socket reader of c, or nil if c is not a bare
// socket: a connection that encrypts (a TLS listener's) must be read
// through its Read, never from its descriptor.
func newRawReader(c net.Conn) *rawReader {
	var sc syscall.Conn
	switch c := c.(type) {
	case *net.TCPConn:
		sc = c
	case *net.UnixConn:
		sc = c
	default:
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &rawReader{raw: raw}
	r.read = func(fd uintptr) bool {
		r.buf = r.pool.Get(r.size)
		r.n, r.err = syscall.Read(int(fd), *r.buf)
		if r.err != nil {
			r.pool.Put(r.buf)
			r.buf, r.n = nil, 0
		}
		// false: nothing to read yet; wait until the socket is readable.
		return r.err != syscall.EAGAIN && r.err != syscall.EWOULDBLOCK
	}
	return r
}

// ReadOnReady waits until the connection is readable, then takes a buffer
// of size bytes from pool and reads into it. It returns the buffer, which
// the caller puts back, and the bytes read; no buffer when it read none.
// gRPC calls it from the connection's one reading goroutine.
func (c *trackedConn) ReadOnReady(size int, pool mem.BufferPool) (*[]byte, int, error) {
	r := c.raw
	if r == nil {
		buf := pool.Get(size)
		n, err := c.Conn.Read(*buf)
		if n == 0 {
			pool.Put(buf)
			return nil, 0, err
		}
		return buf, n, err
	}
	r.size, r.pool = size, pool
	err := r.raw.Read(r.read)
	buf, n, rerr := r.buf, r.n, r.err
	r.pool, r.buf, r.n, r.err = nil, nil, 0, nil
	switch {
	case err != nil:
		if buf != nil {
			pool.Put(buf)
		}
		return nil, 0, err
	case rerr != nil:
		return nil, 0, rerr
	case n == 0:
		// read(2) tells a closed peer by returning nothing.
		pool.Put(buf)
		return nil, 0, io.EOF
	}
	return buf, n, nil
}
