package director

import (
	"testing"
	"time"
)

// TestAuditPace: a caller's burst is free, the record past it waits its
// turn at auditRate, another caller is not slowed, the wait is capped, and
// the bucket refills with time.
func TestAuditPace(t *testing.T) {
	var p auditPace
	t0 := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	for i := range auditBurst {
		if d := p.delay("mallory", t0); d != 0 {
			t.Fatalf("record %d of the burst waits %v", i, d)
		}
	}
	if d := p.delay("mallory", t0); d != time.Second/auditRate {
		t.Fatalf("the first record past the burst waits %v, want %v", d, time.Second/auditRate)
	}
	if d := p.delay("alice", t0); d != 0 {
		t.Fatalf("another caller waits %v", d)
	}
	for range 10 * auditRate * int(auditMaxWait/time.Second) {
		p.delay("mallory", t0)
	}
	if d := p.delay("mallory", t0); d != auditMaxWait {
		t.Fatalf("a flood's wait is %v, want the cap %v", d, auditMaxWait)
	}
	p2 := auditPace{}
	for range auditBurst + 10 {
		p2.delay("bob", t0)
	}
	if d := p2.delay("bob", t0.Add(time.Second)); d != 0 {
		t.Fatalf("a second later the bucket has refilled %d tokens, yet the record waits %v", auditRate, d)
	}
	p2.delay("carol", t0.Add(2*auditIdle))
	if _, ok := p2.buckets["bob"]; ok {
		t.Fatal("an idle caller's bucket is kept")
	}
}
