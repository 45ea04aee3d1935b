package director

import (
	"sync"
	"time"
)

// The audit trail keeps every call, so a caller that floods the director
// with calls (refused ones cost it nothing else) would grow the trail as
// fast as it can send. Each caller's records are paced instead: past a
// burst, recording its call waits for its turn, which slows the caller,
// not the director's disk. A legitimate admin, a frontend polling its
// experiment, never meets the pace.
const (
	// auditRate is the records per second a caller gets past its burst.
	auditRate = 50
	// auditBurst is how many records a caller may make at once.
	auditBurst = 500
	// auditMaxWait bounds one wait: a caller that has reserved more than
	// this much of the future waits this long each time.
	auditMaxWait = 10 * time.Second
	// auditIdle is how long a caller's bucket outlives its last call.
	auditIdle = time.Minute
)

// auditPace is a token bucket per caller.
type auditPace struct {
	mu      sync.Mutex
	buckets map[string]*auditBucket
	swept   time.Time
}

type auditBucket struct {
	tokens float64
	last   time.Time
}

// delay takes a token of caller's bucket at now and returns how long the
// caller must wait for it (0 within its burst).
func (p *auditPace) delay(caller string, now time.Time) time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.buckets == nil {
		p.buckets = map[string]*auditBucket{}
	}
	if now.Sub(p.swept) > auditIdle {
		for k, b := range p.buckets {
			if now.Sub(b.last) > auditIdle {
				delete(p.buckets, k)
			}
		}
		p.swept = now
	}
	b, ok := p.buckets[caller]
	if !ok {
		b = &auditBucket{tokens: auditBurst, last: now}
		p.buckets[caller] = b
	}
	if now.After(b.last) {
		b.tokens = min(auditBurst, b.tokens+now.Sub(b.last).Seconds()*auditRate)
		b.last = now
	}
	b.tokens--
	if b.tokens >= 0 {
		return 0
	}
	wait := time.Duration(-b.tokens / auditRate * float64(time.Second))
	return min(wait, auditMaxWait)
}
