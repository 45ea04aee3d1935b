package envoy

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/pki"
)

// Backoff between attempts to reach the director: jittered, starting at
// minBackoff and doubling up to maxBackoff.
const (
	minBackoff = 200 * time.Millisecond
	maxBackoff = 10 * time.Second
)

// backoff yields jittered, doubling delays between min and max.
type backoff struct {
	min, max time.Duration
	next     time.Duration // the upper bound of the next delay; 0 before the first
}

func newBackoff(min, max time.Duration) *backoff {
	return &backoff{min: min, max: max}
}

// delay returns the next delay: a random value in the upper half of the
// current bound ("equal jitter"), so retries of many envoys spread out while
// each still backs off.
func (b *backoff) delay() time.Duration {
	if b.next == 0 {
		b.next = b.min
	}
	d := b.next
	if d > b.max {
		d = b.max
	}
	b.next = min(2*d, b.max)
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2+1)
}

// reset starts the delays over after a success.
func (b *backoff) reset() { b.next = 0 }

// sleep waits for d or until ctx ends, and reports whether it waited all of d.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// transient reports whether err is a director error worth retrying: the
// director is unreachable or restarting, a call took too long, or the
// director is busy (too many downloads or uploads in progress: its
// ResourceExhausted whose message begins with api.ErrBusy's, unlike a size
// cap's, which no retry helps).
func transient(err error) bool {
	switch st := status.Convert(err); st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded:
		return true
	case codes.ResourceExhausted:
		return strings.HasPrefix(st.Message(), api.ErrBusy.Error())
	}
	return false
}

// retry calls fn until it returns nil or an error that is not transient,
// or ctx ends, backing off between attempts. It returns fn's last error, or
// ctx's error if ctx ended while it waited.
func retry(ctx context.Context, log *slog.Logger, rpc string, fn func(context.Context) error) error {
	b := newBackoff(minBackoff, maxBackoff)
	for {
		err := fn(ctx)
		if err == nil || ctx.Err() != nil || !transient(err) {
			return err
		}
		d := b.delay()
		logRetry(log, "director unreachable; retrying", rpc, err, d)
		if !sleep(ctx, d) {
			return ctx.Err()
		}
	}
}

// logRetry logs a failed call to the director that is retried in d: a
// certificate problem as such, at error level and every time (the director
// answers, but a certificate check failed, and the operator may be fixing
// it), anything else as msg with a hint where one applies.
func logRetry(log *slog.Logger, msg, rpc string, err error, d time.Duration) {
	if problem := pki.CertProblem(err); problem != "" {
		log.Error("TLS certificate problem; retrying", api.LogRPC, rpc, api.LogReason, problem, api.LogErr, err, api.LogRetryIn, d)
		return
	}
	attrs := []any{api.LogRPC, rpc, api.LogErr, err, api.LogRetryIn, d}
	if hint := dialHint(err); hint != "" {
		attrs = append(attrs, api.LogHint, hint)
	}
	log.Warn(msg, attrs...)
}
