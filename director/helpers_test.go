package director

import (
	"context"
	"sync"
	"testing"
	"time"
)

// fakeClock is a settable clock, so liveness tests need no sleeps.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// testCfg is a Config for tests: a temp data dir, a fake clock, fixed shapes.
func testCfg(tb testing.TB, clock *fakeClock) Config {
	tb.Helper()
	return Config{
		DataDir:           tb.TempDir(),
		SampleShape:       []string{"28", "28"},
		TargetShape:       []string{"1"},
		HealthCheckPeriod: 10 * time.Second,
		Now:               clock.Now,
	}
}

func mustNew(tb testing.TB, cfg Config) *Director {
	tb.Helper()
	d, err := New(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("New: %v", err)
	}
	tb.Cleanup(func() { d.Close() })
	return d
}
