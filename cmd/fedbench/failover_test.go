package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestLogRecords reads back what slog's JSON handler, as the director and
// the envoy write with --log-format json, logs: the failover figure finds
// its rounds, durations and times this way.
func TestLogRecords(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewJSONHandler(f, nil))
	log.Info("round aggregated", "job", "j1", "round", int32(2), "final", false)
	f.WriteString("not json: a panic's stack, say\n")
	log.Info("training done", "round", int32(2), "took", 1234*time.Millisecond)
	log.Info("standby: another replica holds the coordinator lease; waiting to take over", "period", time.Second)
	log.Info("training done", "round", int32(3), "took", "1.5s")
	f.Close()

	tests := []struct {
		msg       string
		n         int
		key       string
		str       string
		duration  time.Duration
		wantTimes bool
	}{
		{msg: "round aggregated", n: 1, key: "round", str: "2", wantTimes: true},
		{msg: "training done", n: 2, key: "took", duration: 1234 * time.Millisecond},
		{msg: "standby: another replica holds", n: 1, key: "period", duration: time.Second},
		{msg: "no such line", n: 0},
	}
	for _, tt := range tests {
		rs := logRecords(path, tt.msg)
		if len(rs) != tt.n {
			t.Fatalf("%q: %d records, want %d", tt.msg, len(rs), tt.n)
		}
		if tt.n == 0 {
			continue
		}
		if tt.str != "" && rs[0].str(tt.key) != tt.str {
			t.Errorf("%q: %s = %q, want %q", tt.msg, tt.key, rs[0].str(tt.key), tt.str)
		}
		if tt.duration != 0 && rs[0].duration(tt.key) != tt.duration {
			t.Errorf("%q: %s = %v, want %v", tt.msg, tt.key, rs[0].duration(tt.key), tt.duration)
		}
		if tt.wantTimes && rs[0].time().IsZero() {
			t.Errorf("%q: no time read from %v", tt.msg, rs[0])
		}
	}
	if d := logRecords(path, "training done")[1].duration("took"); d != 1500*time.Millisecond {
		t.Errorf("a duration logged as text: %v, want 1.5s", d)
	}
}
