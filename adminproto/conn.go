package adminproto

import (
	"net"
	"time"
)

// idleWriteChunk is the largest piece idleConn writes under one deadline, so
// that a big Write on a slow link counts as progress piece by piece rather
// than having to finish within one idle period.
const idleWriteChunk = 64 << 10

// NewIdleConn returns c wrapped so that every Read and Write first moves c's
// deadline, for both directions, to idle from now. A transfer then fails only
// when nothing has moved either way for idle: a slow but moving transfer is
// never cut off, as it would be by a fixed deadline, and a stalled one is.
// Both directions share the deadline so that a Read waiting for a reply while
// a Write is still sending (an upload the server may refuse early) is kept
// alive by the Write's progress.
//
// Errors from a stall wrap os.ErrDeadlineExceeded. An idle of 0 or less
// returns c unchanged.
func NewIdleConn(c net.Conn, idle time.Duration) net.Conn {
	if idle <= 0 {
		return c
	}
	return &idleConn{Conn: c, idle: idle}
}

type idleConn struct {
	net.Conn
	idle time.Duration
}

func (c *idleConn) Read(p []byte) (int, error) {
	if err := c.Conn.SetDeadline(time.Now().Add(c.idle)); err != nil {
		return 0, err
	}
	return c.Conn.Read(p)
}

func (c *idleConn) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		if err := c.Conn.SetDeadline(time.Now().Add(c.idle)); err != nil {
			return n, err
		}
		m, err := c.Conn.Write(p[:min(len(p), idleWriteChunk)])
		n += m
		if err != nil {
			return n, err
		}
		p = p[m:]
	}
	return n, nil
}
