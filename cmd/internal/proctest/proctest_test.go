package proctest

import (
	"bytes"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestParseRecord parses lines as slog's own handlers write them, with the
// attributes of the director's start-up line and values that need quoting.
func TestParseRecord(t *testing.T) {
	attrs := []any{"grpc", "127.0.0.1:41234", "admin", "[::1]:8003", "data_dir", "/tmp/a b", "note", `say "hi"=x`, "n", 3}
	want := Record{"level": "INFO", "msg": "director serving", "grpc": "127.0.0.1:41234", "admin": "[::1]:8003",
		"data_dir": "/tmp/a b", "note": `say "hi"=x`, "n": "3"}
	tests := []struct {
		name    string
		handler func(*bytes.Buffer) slog.Handler
	}{
		{"text", func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) }},
		{"json", func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			slog.New(tt.handler(&b)).Info("director serving", attrs...)
			got, ok := ParseRecord(b.String())
			if !ok {
				t.Fatalf("ParseRecord(%q): not a record", b.String())
			}
			delete(got, "time")
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("ParseRecord(%q):\ngot  %v\nwant %v", b.String(), got, want)
			}
		})
	}
	for _, line := range []string{"", "Error: listen tcp: address already in use", "goroutine 1 [running]:", `msg="unterminated`, "a=b c"} {
		if r, ok := ParseRecord(line); ok {
			t.Errorf("ParseRecord(%q): got %v, want not a record", line, r)
		}
	}
}

// TestLogLines checks that a waiter sees only complete lines, each once,
// however the writes split them, and is woken by the next write.
func TestLogLines(t *testing.T) {
	var l Log
	lines, off, grown := l.linesFrom(0)
	if len(lines) != 0 || off != 0 {
		t.Fatalf("empty log: got %q at %d", lines, off)
	}
	l.Write([]byte("one\ntw"))
	select {
	case <-grown:
	default:
		t.Fatal("a write did not wake the waiter")
	}
	lines, off, _ = l.linesFrom(off)
	if !slices.Equal(lines, []string{"one"}) || off != 4 {
		t.Fatalf("after %q: got %q at %d, want [one] at 4", "one\ntw", lines, off)
	}
	l.Write([]byte("o\nthree\n"))
	lines, off, _ = l.linesFrom(off)
	if !slices.Equal(lines, []string{"two", "three"}) || off != len(l.String()) {
		t.Fatalf("got %q at %d, want [two three] at the end", lines, off)
	}
}

// fatalTB records the first Fatalf and ends the goroutine, as testing.T's
// does, so a test can check how a helper fails.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// runHelper runs fn with a fatalTB in its own goroutine and returns the
// failure message, "" if fn returned.
func runHelper(t *testing.T, fn func(tb testing.TB)) string {
	f := &fatalTB{TB: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(f)
	}()
	<-done
	return f.msg
}

func TestStartDirector(t *testing.T) {
	const line = `time=2026-01-02T03:04:05Z level=INFO msg="director serving" grpc=127.0.0.1:40001 admin=127.0.0.1:40002 version=dev`
	tests := []struct {
		name    string
		script  string
		want    Addrs
		wantErr string
	}{
		{name: "serves", script: "echo 'level=WARN msg=\"serving without TLS\"' >&2; echo '" + line + "' >&2; exec sleep 60",
			want: Addrs{GRPC: "127.0.0.1:40001", Admin: "127.0.0.1:40002"}},
		{name: "web console", script: "echo '" + line + " web=127.0.0.1:40003' >&2; exec sleep 60",
			want: Addrs{GRPC: "127.0.0.1:40001", Admin: "127.0.0.1:40002", Web: "127.0.0.1:40003"}},
		{name: "json", script: `echo '{"level":"INFO","msg":"director serving","grpc":"127.0.0.1:1","admin":"127.0.0.1:2"}' >&2; exec sleep 60`,
			want: Addrs{GRPC: "127.0.0.1:1", Admin: "127.0.0.1:2"}},
		{name: "exits first", script: "echo 'Error: start director: open store: disk on fire' >&2; exit 1",
			wantErr: "disk on fire"},
		{name: "no addresses", script: `echo 'level=INFO msg="director serving"' >&2; exec sleep 60`,
			wantErr: "lacks grpc= or admin="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got Addrs
			t0 := time.Now()
			msg := runHelper(t, func(tb testing.TB) { _, got = StartDirector(tb, "/bin/sh", "-c", tt.script) })
			if tt.wantErr == "" && (msg != "" || got != tt.want) {
				t.Fatalf("got %+v (failure %q), want %+v", got, msg, tt.want)
			}
			if !strings.Contains(msg, tt.wantErr) {
				t.Fatalf("failure %q lacks %q", msg, tt.wantErr)
			}
			if took := time.Since(t0); took > StartTimeout/2 {
				t.Fatalf("took %v: the helper waited for its deadline instead of the exit", took)
			}
		})
	}
}
