package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/fedplane/fedplane/job"
)

// download is figure 3: `fladmin download-job` of a job whose results hold
// a large model, against a raw loopback copy of the model's bytes into an
// fsynced file. The job asks for more envoys than exist, so it stays
// pending, and a pending job's results are job.json, status.json,
// metrics.csv and models/last.safetensors, its initial model. Only the
// download command is timed.
func (b *bench) download(ctx context.Context) ([]row, error) {
	dir, err := b.dir("download")
	if err != nil {
		return nil, err
	}
	jobDir := filepath.Join(dir, "job")
	if _, err := writeJob(jobDir, manifest{Name: "bench-download", MinEnvoys: 100_000}, b.cfg.downloadMiB, 0, 2); err != nil {
		return nil, err
	}
	model := filepath.Join(jobDir, job.ModelFile)
	fi, err := os.Stat(model)
	if err != nil {
		return nil, err
	}
	total := fi.Size()
	d, err := b.startDirector(ctx, dir)
	if err != nil {
		return nil, err
	}
	defer d.stop()
	id, took, err := b.submit(ctx, d.admin, jobDir)
	if err != nil {
		return nil, err
	}
	b.logf("download: submitted %d MiB model in %v", b.cfg.downloadMiB, took.Round(time.Millisecond))
	time.Sleep(200 * time.Millisecond)
	peak, err := startPeak(d.pid())
	if err != nil {
		return nil, err
	}

	var rawDur, dlDur time.Duration
	for rep := range b.cfg.transferReps {
		flushDirty()
		_, rawTook, err := rawCopyToFile([]string{model}, filepath.Join(dir, "raw.bin"))
		if err != nil {
			return nil, err
		}
		rawDur += rawTook
		out := filepath.Join(dir, fmt.Sprintf("results-%d", rep))
		last := rep == b.cfg.transferReps-1
		flushDirty()
		prof := b.profileDirector(ctx, d, last, expect(dlDur, rep, total, 300), "download.pprof")
		_, took, err = b.fladmin(ctx, d.admin, "download-job", id, "-d", out)
		prof.wait(b)
		if err != nil {
			return nil, err
		}
		dlDur += took
		got, err := os.Stat(filepath.Join(out, id, "models", "last.safetensors"))
		if err != nil {
			return nil, fmt.Errorf("downloaded results: %w", err)
		}
		if got.Size() != total {
			return nil, fmt.Errorf("downloaded models/last.safetensors has %d bytes, want %d", got.Size(), total)
		}
		b.logf("download: rep %d: raw %s, download-job %s", rep+1, fmtMBps(mbps(total, rawTook)), fmtMBps(mbps(total, took)))
		if err := os.RemoveAll(out); err != nil {
			return nil, err
		}
	}
	growth, err := peak.growth()
	if err != nil {
		return nil, err
	}
	if err := d.alive(); err != nil {
		return nil, err
	}
	reps := time.Duration(b.cfg.transferReps)
	r := row{
		figure:   fmt.Sprintf("3. download %d MiB model: fladmin download-job (floor: raw TCP copy to fsynced file)", b.cfg.downloadMiB),
		fedplane: fmtMBps(mbps(total, dlDur/reps)),
		floor:    fmtMBps(mbps(total, rawDur/reps)),
		ratio:    rawDur.Seconds() / dlDur.Seconds(),
	}
	r.goal = atLeast(r.ratio, 0.5)
	mem := row{figure: "3. download: director peak RSS growth (report only)", fedplane: fmtMiB(growth), ratio: nan}
	return []row{r, mem}, nil
}
