package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// memSample is a director's memory at one moment: what the kernel counts
// (RSS) and what the Go runtime says it uses, from the director's own
// Prometheus endpoint. RSS also holds heap the runtime has freed but not
// yet returned to the kernel, so it is the figure that counts; the heap
// and the stacks say where it went.
type memSample struct {
	rss        int64 // VmRSS
	heapInuse  int64 // go_memstats_heap_inuse_bytes: spans holding objects, live or not yet swept
	stackInuse int64 // go_memstats_stack_inuse_bytes: goroutine stacks
	goroutines int64 // go_goroutines
}

// sampleMem reads d's RSS from /proc and the rest from its metrics port.
func (d *directorProc) sampleMem(ctx context.Context) (memSample, error) {
	rss, _, err := procMem(d.pid())
	if err != nil {
		return memSample{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+d.metrics+"/metrics", nil)
	if err != nil {
		return memSample{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return memSample{}, fmt.Errorf("director metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return memSample{}, fmt.Errorf("director metrics: %s", resp.Status)
	}
	m, err := parseGoMem(resp.Body)
	if err != nil {
		return memSample{}, fmt.Errorf("director metrics: %w", err)
	}
	m.rss = rss
	return m, nil
}

// maxMetricsSize bounds the director's metrics page, which fedbench reads
// whole: a few hundred series, far under it.
const maxMetricsSize = 8 << 20

// parseGoMem reads the Go runtime's heap, stack and goroutine gauges from a
// Prometheus text exposition; each must be there.
func parseGoMem(r io.Reader) (memSample, error) {
	var m memSample
	want := map[string]*int64{
		"go_memstats_heap_inuse_bytes":  &m.heapInuse,
		"go_memstats_stack_inuse_bytes": &m.stackInuse,
		"go_goroutines":                 &m.goroutines,
	}
	seen := map[string]bool{}
	s := bufio.NewScanner(io.LimitReader(r, maxMetricsSize))
	for s.Scan() {
		name, value, ok := strings.Cut(s.Text(), " ")
		p, wanted := want[name]
		if !ok || !wanted {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			return memSample{}, fmt.Errorf("%s: %w", name, err)
		}
		*p, seen[name] = int64(v), true
	}
	if err := s.Err(); err != nil {
		return memSample{}, err
	}
	for name := range want {
		if !seen[name] {
			return memSample{}, fmt.Errorf("no %s", name)
		}
	}
	return m, nil
}

// perEnvoy is the growth from before to after, per envoy, in KiB.
type perEnvoy struct{ rss, heap, stack, goroutines float64 }

func growthPer(before, after memSample, n int) perEnvoy {
	per := func(a, b int64) float64 { return float64(b-a) / float64(n) }
	return perEnvoy{
		rss:        per(before.rss, after.rss) / 1024,
		heap:       per(before.heapInuse, after.heapInuse) / 1024,
		stack:      per(before.stackInuse, after.stackInuse) / 1024,
		goroutines: per(before.goroutines, after.goroutines),
	}
}
