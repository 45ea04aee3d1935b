package e2e

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// benchUploadMiB is the job folder's size for BenchmarkUpload; override with
// FEDPLANE_BENCH_UPLOAD_MIB.
func benchUploadMiB() int {
	if n, err := strconv.Atoi(os.Getenv("FEDPLANE_BENCH_UPLOAD_MIB")); err == nil && n > 0 {
		return n
	}
	return 1024
}

// writeRandomJob writes a job folder holding mib MiB of random bytes in
// 64 MiB files (random data does not compress: the worst case for the zip
// stream, and the same bytes the raw copy sends).
func writeRandomJob(b *testing.B, mib int) (dir string, total int64) {
	b.Helper()
	dir = filepath.Join(b.TempDir(), "job")
	os.MkdirAll(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "job.json"), []byte(e2eManifest), 0o644)
	os.WriteFile(filepath.Join(dir, "model.safetensors"), smallModel(b), 0o644)
	rng := rand.NewChaCha8([32]byte{1})
	buf := make([]byte, 1<<20)
	for i := 0; mib > 0; i++ {
		n := min(mib, 64)
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("shard-%03d.bin", i)))
		if err != nil {
			b.Fatal(err)
		}
		for range n {
			rng.Read(buf)
			f.Write(buf)
		}
		f.Close()
		mib -= n
		total += int64(n) << 20
	}
	return dir, total
}

// procRSS reads a process's current and peak resident set size in bytes.
func procRSS(pid int) (rss, hwm int64) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		k, v, _ := strings.Cut(s.Text(), ":")
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			rss = kb << 10
		case "VmHWM":
			hwm = kb << 10
		}
	}
	return rss, hwm
}

// rawCopy sends every file of dir over a loopback TCP connection into one
// fsynced file: the floor an upload is measured against.
func rawCopy(b *testing.B, dir string) int64 {
	b.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer lis.Close()
	dst := filepath.Join(b.TempDir(), "raw.bin")
	done := make(chan error, 1)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		f, err := os.Create(dst)
		if err != nil {
			done <- err
			return
		}
		defer f.Close()
		if _, err := io.CopyBuffer(f, c, make([]byte, 256<<10)); err != nil {
			done <- err
			return
		}
		done <- f.Sync()
	}()
	c, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	entries, _ := os.ReadDir(dir)
	var n int64
	for _, e := range entries {
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			b.Fatal(err)
		}
		m, err := io.CopyBuffer(c, f, make([]byte, 256<<10))
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
		n += m
	}
	c.Close()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	os.Remove(dst)
	return n
}

// BenchmarkUpload compares `fladmin submit-job` of a folder of random bytes
// (1 GiB unless FEDPLANE_BENCH_UPLOAD_MIB says otherwise) with a raw loopback
// TCP copy of the same bytes into an fsynced file, and reports the director's
// peak RSS growth during the uploads. Goal: ratio >= 0.5, growth < 64 MiB.
func BenchmarkUpload(b *testing.B) {
	dir, total := writeRandomJob(b, benchUploadMiB())
	d := startDirectorAdmin(b, b.TempDir())
	// The baseline is taken once the director has answered an admin
	// exchange, so its start-up and the admin path's first allocations are
	// behind it: the growth measured is the uploads'.
	mustFladmin(b, d.admin, "status")
	rssBefore, _ := procRSS(d.proc.Cmd.Process.Pid)

	var rawDur, upDur time.Duration
	b.SetBytes(total)
	b.ResetTimer()
	for range b.N {
		t0 := time.Now()
		rawCopy(b, dir)
		rawDur += time.Since(t0)
		t0 = time.Now()
		mustFladmin(b, d.admin, "submit-job", "--no-progress", dir)
		upDur += time.Since(t0)
	}
	b.StopTimer()
	_, hwm := procRSS(d.proc.Cmd.Process.Pid)
	mbps := func(d time.Duration) float64 { return float64(total) * float64(b.N) / d.Seconds() / 1e6 }
	b.ReportMetric(mbps(upDur), "upload-MB/s")
	b.ReportMetric(mbps(rawDur), "raw-MB/s")
	b.ReportMetric(rawDur.Seconds()/upDur.Seconds(), "ratio")
	b.ReportMetric(float64(hwm-rssBefore)/(1<<20), "director-peak-rss-growth-MiB")
}
