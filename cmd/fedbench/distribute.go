package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/directorpb"
)

// distPeriod is how often the distribution figure's envoys heartbeat: well
// inside the director's default offline-after of 20 s.
const distPeriod = 2 * time.Second

// distribute is figure 4: distEnvoys simulated envoys, each on its own
// connection, register, are named by a job of distMiB MiB, heartbeat until
// the scheduler starts it, learn of it from WaitExperiment, then all fetch
// the archive at once with GetExperimentData, hashing and discarding it.
// Their aggregate MB/s is measured against one raw loopback copy of the
// job's files to a receiver that hashes and discards; and the director's
// peak RSS growth over the fetches.
func (b *bench) distribute(ctx context.Context) ([]row, error) {
	n := b.cfg.distEnvoys
	dir, err := b.dir("distribute")
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	d, err := b.startDirector(ctx, dir)
	if err != nil {
		return nil, err
	}
	defer d.stop()
	f, err := dialFleet(d.grpc, n, n)
	if err != nil {
		return nil, err
	}
	defer f.close()
	if err := f.register(ctx, n); err != nil {
		return nil, err
	}
	hb := f.pace(ctx, distPeriod, 8)
	defer hb.stop()

	jobDir := filepath.Join(dir, "job")
	files, err := writeJob(jobDir, manifest{Name: "bench-distribute", Envoys: f.names}, 0, b.cfg.distMiB, 3)
	if err != nil {
		return nil, err
	}
	payload, err := sizeOf(files)
	if err != nil {
		return nil, err
	}
	id, _, err := b.submit(ctx, d.admin, jobDir)
	if err != nil {
		return nil, err
	}
	if err := forEach(ctx, n, n, func(ctx context.Context, i int) error {
		ctx, cancel := context.WithTimeout(ctx, time.Minute)
		defer cancel()
		resp, err := f.client(i).WaitExperiment(ctx, &directorpb.WaitExperimentRequest{CollaboratorName: f.names[i]})
		if err != nil {
			return fmt.Errorf("WaitExperiment %s: %w", f.names[i], err)
		}
		if got := resp.GetExperimentName(); got != id {
			return fmt.Errorf("WaitExperiment %s: got experiment %q, want %q", f.names[i], got, id)
		}
		return nil
	}); err != nil {
		return nil, err
	}

	// Raw copies and fetches alternate, a raw copy first and last.
	var rawDur time.Duration
	floor := func() error {
		_, took, err := rawCopyHashed(files)
		rawDur += took
		return err
	}
	var fedRate float64
	var peak *peakTracker
	for rep := range b.cfg.distReps {
		if err := floor(); err != nil {
			return nil, err
		}
		flushDirty()
		time.Sleep(200 * time.Millisecond)
		if rep == 0 {
			if peak, err = startPeak(d.pid()); err != nil {
				return nil, err
			}
		}
		last := rep == b.cfg.distReps-1
		expected := expect(0, 0, int64(n)*payload, 500)
		prof := b.profileDirector(ctx, d, last, expected, "distribute.pprof")
		heap := b.heapProfileAt(ctx, d, last, expected/2, "distribute-heap.pprof")
		moved, took, err := fetchAll(ctx, f, id)
		prof.wait(b)
		heap.wait(b)
		if err != nil {
			return nil, err
		}
		fedRate += mbps(moved, took)
		b.logf("distribute: rep %d: raw %s; %d envoys × %d bytes in %v, %s", rep+1,
			fmtMBps(mbps(payload, rawDur/time.Duration(rep+1))), n, moved/int64(n), took.Round(time.Millisecond), fmtMBps(mbps(moved, took)))
	}
	growth, err := peak.growth()
	if err != nil {
		return nil, err
	}
	if err := hb.stop(); err != nil {
		return nil, err
	}
	if err := d.alive(); err != nil {
		return nil, err
	}
	if err := floor(); err != nil {
		return nil, err
	}
	fedRate /= float64(b.cfg.distReps)
	rawRate := mbps(payload, rawDur/time.Duration(b.cfg.distReps+1))
	r := row{
		figure:   fmt.Sprintf("4. distribution: %d envoys × %d MiB at once, aggregate (floor: 1 raw copy; all hash)", n, b.cfg.distMiB),
		fedplane: fmtMBps(fedRate),
		floor:    fmtMBps(rawRate),
		ratio:    fedRate / rawRate,
	}
	r.goal = atLeast(r.ratio, 0.8)
	rounds := fmt.Sprintf("%d rounds", b.cfg.distReps)
	if b.cfg.distReps == 1 {
		rounds = "1 round"
	}
	mem := row{figure: "4. distribution: director peak RSS growth over " + rounds, fedplane: fmtMiB(growth), ratio: nan}
	mem.goal = below(float64(growth)/(1<<20), 128, " MiB")
	return []row{r, mem}, nil
}

// fetchAll has every envoy of f fetch experiment id's archive at once and
// returns the bytes they received in all and the time from the first
// request to the last byte.
func fetchAll(ctx context.Context, f *fleet, id string) (int64, time.Duration, error) {
	sizes := make([]int64, len(f.names))
	start := time.Now()
	err := forEach(ctx, len(f.names), len(f.names), func(ctx context.Context, i int) error {
		var err error
		sizes[i], err = fetchArchive(ctx, f.client(i), id, f.names[i])
		return err
	})
	took := time.Since(start)
	var moved int64
	for _, s := range sizes {
		moved += s
	}
	return moved, took, err
}

// fetchArchive streams experiment id's archive as envoy name, hashing and
// discarding it, and checks it against the size and sha256 the director
// announced. It returns the size.
func fetchArchive(ctx context.Context, c directorpb.DirectorClient, id, name string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	stream, err := c.GetExperimentData(ctx, &directorpb.GetExperimentDataRequest{ExperimentName: id, CollaboratorName: name})
	if err != nil {
		return 0, err
	}
	md, err := stream.Header()
	if err != nil {
		return 0, err
	}
	want, sum, err := archiveHeader(md)
	if err != nil {
		return 0, err
	}
	h := sha256.New()
	var n int64
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("%s: GetExperimentData: %w", name, err)
		}
		h.Write(msg.GetNpbytes())
		n += int64(len(msg.GetNpbytes()))
	}
	if n != want || hex.EncodeToString(h.Sum(nil)) != sum {
		return 0, fmt.Errorf("%s: archive of %d bytes does not match the announced %d bytes and sha256", name, n, want)
	}
	return n, nil
}

func archiveHeader(md metadata.MD) (int64, string, error) {
	sizes, sums := md.Get(api.MDArchiveSize), md.Get(api.MDArchiveSHA256)
	if len(sizes) != 1 || len(sums) != 1 {
		return 0, "", errors.New("GetExperimentData: no archive size and sha256 in the response header")
	}
	n, err := strconv.ParseInt(sizes[0], 10, 64)
	if err != nil {
		return 0, "", fmt.Errorf("GetExperimentData: archive size %q: %w", sizes[0], err)
	}
	return n, sums[0], nil
}
