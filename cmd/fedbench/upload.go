package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"
)

// upload is figure 2: `fladmin submit-job` of a folder of random bytes
// (zipping included) into a real director, against a raw loopback copy of
// the same files into an fsynced file; and the director's peak RSS growth
// over the uploads.
func (b *bench) upload(ctx context.Context) ([]row, error) {
	dir, err := b.dir("upload")
	if err != nil {
		return nil, err
	}
	jobDir := filepath.Join(dir, "job")
	files, err := writeJob(jobDir, manifest{Name: "bench-upload", MinEnvoys: 1}, 0, b.cfg.uploadMiB, 1)
	if err != nil {
		return nil, err
	}
	total, err := sizeOf(files)
	if err != nil {
		return nil, err
	}
	d, err := b.startDirector(ctx, dir)
	if err != nil {
		return nil, err
	}
	defer d.stop()
	time.Sleep(200 * time.Millisecond) // let start-up garbage settle before the baseline
	peak, err := startPeak(d.pid())
	if err != nil {
		return nil, err
	}

	var rawDur, upDur time.Duration
	for rep := range b.cfg.transferReps {
		flushDirty()
		_, rawTook, err := rawCopyToFile(files, filepath.Join(dir, "raw.bin"))
		if err != nil {
			return nil, err
		}
		rawDur += rawTook
		last := rep == b.cfg.transferReps-1
		flushDirty()
		prof := b.profileDirector(ctx, d, last, expect(upDur, rep, total, 300), "upload.pprof")
		id, took, err := b.submit(ctx, d.admin, jobDir)
		prof.wait(b)
		if err != nil {
			return nil, err
		}
		upDur += took
		b.logf("upload: rep %d: raw %s, submit-job %s", rep+1, fmtMBps(mbps(total, rawTook)), fmtMBps(mbps(total, took)))
		// Not timed: keep the disk from filling up over the reps.
		if _, _, err := b.fladmin(ctx, d.admin, "delete-job", id); err != nil {
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
		figure:   fmt.Sprintf("2. upload %d MiB: fladmin submit-job (floor: raw TCP copy to fsynced file)", b.cfg.uploadMiB),
		fedplane: fmtMBps(mbps(total, upDur/reps)),
		floor:    fmtMBps(mbps(total, rawDur/reps)),
		ratio:    rawDur.Seconds() / upDur.Seconds(),
	}
	r.goal = atLeast(r.ratio, 0.5)
	mem := row{figure: "2. upload: director peak RSS growth", fedplane: fmtMiB(growth), ratio: nan}
	mem.goal = below(float64(growth)/(1<<20), 64, " MiB")
	return []row{r, mem}, nil
}
