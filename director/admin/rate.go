package admin

import (
	"errors"
	"fmt"
	"net"
	"time"
)

// errTooSlow ends a request that arrives slower than the minimum rate.
var errTooSlow = errors.New("request arrives too slowly")

// rateConn drops a peer whose bytes arrive slower than min bytes per
// second. Only the time spent waiting in Read counts: while the director
// itself is busy (writing an upload to disk, sending a reply) the peer is
// not to blame. Each window of waiting must bring min × window bytes, so a
// trickle of a byte now and then, which keeps an idle timeout from ever
// firing, holds a connection for one window at most.
type rateConn struct {
	net.Conn
	min    int64
	window time.Duration

	waited time.Duration // in Read, this window
	got    int64         // bytes read, this window
}

// newRateConn returns c checked for min bytes per second over window; a
// negative min returns c as it is.
func newRateConn(c net.Conn, min int64, window time.Duration) net.Conn {
	if min < 0 {
		return c
	}
	return &rateConn{Conn: c, min: min, window: window}
}

func (c *rateConn) Read(p []byte) (int, error) {
	t0 := time.Now()
	n, err := c.Conn.Read(p)
	c.waited += time.Since(t0)
	c.got += int64(n)
	if c.waited >= c.window {
		if need := int64(float64(c.min) * c.waited.Seconds()); c.got < need {
			return n, fmt.Errorf("%w: %d bytes in %v of waiting, at least %d bytes/s wanted", errTooSlow, c.got, c.waited.Round(time.Millisecond), c.min)
		}
		c.waited, c.got = 0, 0
	}
	return n, err
}
