package main

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
	"unicode/utf8"
)

// goal is what a row must reach, and whether it did. The zero goal only
// reports.
type goal struct {
	text string
	set  bool
	met  bool
}

// atLeast is the goal "ratio ≥ want".
func atLeast(ratio, want float64) goal {
	return goal{text: fmt.Sprintf("≥ %.2g", want), set: true, met: ratio >= want}
}

// below is the goal "value < limit", unit written right after limit (so it
// holds its own space, if any).
func below(value, limit float64, unit string) goal {
	return goal{text: fmt.Sprintf("< %g%s", limit, unit), set: true, met: value < limit}
}

// atMost is the goal "value ≤ limit", unit as for below.
func atMost(value, limit float64, unit string) goal {
	return goal{text: fmt.Sprintf("≤ %g%s", limit, unit), set: true, met: value <= limit}
}

// row is one line of the table. ratio is floor-time / fedplane-time (or
// fedplane-rate / floor-rate): 1 is as fast as the floor, and higher is
// better; NaN when the row has no floor.
type row struct {
	figure   string
	fedplane string
	floor    string
	ratio    float64
	goal     goal
	err      error
}

// status is "met", "MISSED", "FAILED", or "" for a row without a goal.
func (r *row) status() string {
	switch {
	case r.err != nil:
		return "FAILED"
	case !r.goal.set:
		return ""
	case r.goal.met:
		return "met"
	default:
		return "MISSED"
	}
}

// printTable writes rows as a Markdown table with aligned columns.
func printTable(w io.Writer, rows []row) error {
	cells := [][]string{{"figure", "fedplane", "floor", "ratio", "goal"}}
	for _, r := range rows {
		ratio := "—"
		if !math.IsNaN(r.ratio) {
			ratio = fmt.Sprintf("%.2f", r.ratio)
		}
		g := r.goal.text
		if s := r.status(); s != "" {
			g = strings.TrimSpace(g + " " + s)
		}
		fp, fl := r.fedplane, r.floor
		if r.err != nil {
			fp, fl, ratio = "error: "+r.err.Error(), "—", "—"
		}
		cells = append(cells, []string{r.figure, orDash(fp), orDash(fl), ratio, orDash(g)})
	}
	widths := make([]int, len(cells[0]))
	for _, c := range cells {
		for i, s := range c {
			widths[i] = max(widths[i], utf8.RuneCountInString(s))
		}
	}
	bw := bufio.NewWriter(w)
	line := func(c []string) {
		for i, s := range c {
			pad := strings.Repeat(" ", widths[i]-utf8.RuneCountInString(s))
			if i == 0 {
				fmt.Fprintf(bw, "| %s%s |", s, pad)
			} else {
				fmt.Fprintf(bw, " %s%s |", pad, s)
			}
		}
		bw.WriteString("\n")
	}
	line(cells[0])
	for i, wd := range widths {
		if i == 0 {
			fmt.Fprintf(bw, "|%s|", strings.Repeat("-", wd+2))
		} else {
			fmt.Fprintf(bw, "%s:|", strings.Repeat("-", wd+1))
		}
	}
	bw.WriteString("\n")
	for _, c := range cells[1:] {
		line(c)
	}
	return bw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

// machine describes where the run happens, for the lines above the table.
func machine(bin string) []string {
	cpu := "unknown"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	mem := "unknown"
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
				var kb int64
				fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kb)
				mem = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
			}
		}
	}
	kernel := "unknown"
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		kernel = strings.TrimSpace(string(b))
	}
	version := "unknown"
	if out, err := exec.Command(filepath.Join(bin, "director"), "--version").Output(); err == nil {
		version = strings.TrimSpace(string(out))
	}
	return []string{
		fmt.Sprintf("machine: %d cores (GOMAXPROCS %d), %s, %s RAM, %s %s, kernel %s",
			runtime.NumCPU(), runtime.GOMAXPROCS(0), cpu, mem, runtime.GOOS, runtime.GOARCH, kernel),
		fmt.Sprintf("go: %s; %s; run at %s", runtime.Version(), version, time.Now().UTC().Format(time.RFC3339)),
	}
}

// Formatting helpers for the table's cells.

func mbps(bytes int64, d time.Duration) float64 { return float64(bytes) / d.Seconds() / 1e6 }

func fmtMBps(v float64) string { return fmt.Sprintf("%.0f MB/s", v) }

func fmtCount(n int) string {
	s := fmt.Sprint(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

func fmtMiB(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func fmtMs(d time.Duration) string {
	return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond))
}

// nan marks a row without a floor.
var nan = math.NaN()
