package envoy

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeLines writes n numbered lines to l, one Write each.
func writeLines(tb testing.TB, l *trainLog, from, n int) string {
	tb.Helper()
	var all strings.Builder
	for i := from; i < from+n; i++ {
		line := fmt.Sprintf("line %04d\n", i)
		if _, err := l.Write([]byte(line)); err != nil {
			tb.Fatal(err)
		}
		all.WriteString(line)
	}
	return all.String()
}

// TestTrainLogRotates checks that a training log stays within about twice
// its bound however much is written, keeping at least its last bound
// bytes, and that a reopened log appends.
func TestTrainLogRotates(t *testing.T) {
	path := filepath.Join(t.TempDir(), trainLogName)
	const bound = 100 // ten lines
	l, err := openTrainLog(path, bound)
	if err != nil {
		t.Fatal(err)
	}
	all := writeLines(t, l, 0, 35)
	l.Close()
	l, err = openTrainLog(path, bound) // the next round's run
	if err != nil {
		t.Fatal(err)
	}
	all += writeLines(t, l, 35, 2)
	l.Close()
	cur, _ := os.ReadFile(path)
	old, _ := os.ReadFile(path + oldLogSuffix)
	if len(cur) > bound || len(old) > bound {
		t.Fatalf("log files of %d and %d bytes, want at most %d each", len(cur), len(old), bound)
	}
	if got := string(old) + string(cur); !strings.HasSuffix(all, got) || len(got) < bound {
		t.Fatalf("the two files hold %q, want the last %d bytes or more of what was written", got, bound)
	}
}

func TestReadLogTail(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, trainLogName)
	l, err := openTrainLog(path, 100)
	if err != nil {
		t.Fatal(err)
	}
	all := writeLines(t, l, 0, 15) // 150 bytes: 100 in train.log.1, 50 in train.log
	l.Close()
	tests := []struct {
		name          string
		max           int
		want          string
		wantTruncated bool
	}{
		{"whole log", 1000, all, false},
		{"exactly the log", len(all), all, false},
		{"from the current file only", 40, all[len(all)-30:], true}, // the first line kept might be cut: dropped
		{"across both files", 75, all[len(all)-70:], true},          // from the first whole line
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, truncated, err := readLogTail(path, tt.max)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want || truncated != tt.wantTruncated {
				t.Fatalf("got %q (truncated %v), want %q (truncated %v)", got, truncated, tt.want, tt.wantTruncated)
			}
			if !bytes.HasSuffix([]byte(all), got) {
				t.Fatalf("got %q, not a tail of the log", got)
			}
		})
	}
	if _, _, err := readLogTail(filepath.Join(dir, "missing.log"), 10); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing log: got %v, want fs.ErrNotExist", err)
	}
}
