package envoy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/directorpb"
	"github.com/fedplane/fedplane/job"
)

const (
	// tmpSuffix marks a file being written; it is renamed once complete.
	tmpSuffix = ".tmp"
)

// fetched is an experiment's job, unpacked.
type fetched struct {
	dir      string // the unpacked job folder
	manifest *job.Manifest
}

// fetch downloads the experiment's archive into its folder, checks it
// against the size and sha256 the director announced, and unpacks it into a
// fresh job folder. A transfer cut by an unreachable director starts over.
func (e *Envoy) fetch(ctx context.Context, x *experiment) (*fetched, error) {
	start := time.Now()
	path := filepath.Join(x.dir, archiveName)
	var size int64
	var md metadata.MD // the response header: the director's archive limits
	err := retry(ctx, x.log, "GetExperimentData", func(ctx context.Context) error {
		var err error
		size, err = e.download(ctx, x.id, path, &md)
		return err
	})
	if err != nil {
		return nil, err
	}
	x.log.Info("job archive received", api.LogBytes, size, api.LogTook, time.Since(start).Round(time.Millisecond))

	dir := filepath.Join(x.dir, jobDirName)
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("remove stale job folder: %w", err)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open job archive: %w", err)
	}
	defer f.Close()
	if _, err := job.Unpack(f, size, dir, archiveLimits(md, e.cfg.ArchiveLimits)); err != nil {
		return nil, err // "unpack job: ..." or "job archive: ..."
	}
	b, err := os.ReadFile(filepath.Join(dir, job.ManifestFile))
	if err != nil {
		return nil, fmt.Errorf("read unpacked job: %w", err)
	}
	m, err := job.ParseManifest(b)
	if err != nil {
		return nil, err // starts with "job.json: "
	}
	return &fetched{dir: dir, manifest: m}, nil
}

// download streams the archive of experiment id into path (through a
// temporary file, synced and renamed once it checks out) and returns its
// size. Errors of the stream are returned as they are, gRPC statuses that
// retry can judge; anything wrong with what arrived is an error of its own.
// The response header is stored in *header.
func (e *Envoy) download(ctx context.Context, id, path string, header *metadata.MD) (int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := e.dirc.GetExperimentData(ctx, &directorpb.GetExperimentDataRequest{ExperimentName: id, CollaboratorName: e.cfg.Name})
	if err != nil {
		return 0, err
	}
	md, err := stream.Header()
	if err != nil {
		return 0, err
	}
	*header = md
	size, sum, herr := archiveHeader(md)
	if herr != nil {
		// A director that failed the call sends no headers at all; its
		// status is the better error.
		if _, err := stream.Recv(); err != nil && !errors.Is(err, io.EOF) {
			return 0, err
		}
		return 0, herr
	}

	tmp := path + tmpSuffix
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return 0, fmt.Errorf("job archive: %w", err)
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(tmp)
		}
	}()
	hw := job.NewHashWriter(f)
	defer hw.Close()
	var total int64
	for n := 1; ; n++ {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return 0, err
		}
		data := msg.GetNpbytes()
		if int64(msg.GetSize()) != int64(len(data)) {
			return 0, fmt.Errorf("broken archive: chunk %d has size %d but %d bytes", n, msg.GetSize(), len(data))
		}
		if total += int64(len(data)); total > size {
			return 0, fmt.Errorf("broken archive: more than the %d bytes the director announced", size)
		}
		if _, err := hw.Write(data); err != nil {
			return 0, fmt.Errorf("job archive: %w", err)
		}
	}
	if total != size {
		return 0, fmt.Errorf("broken archive: received %d bytes, the director announced %d", total, size)
	}
	hw.Close()
	if got := hw.Sum(); got != sum {
		return 0, fmt.Errorf("broken archive: its sha256 is %s, the director announced %s", got, sum)
	}
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("job archive: %w", err)
	}
	if err := f.Close(); err != nil {
		return 0, fmt.Errorf("job archive: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return 0, fmt.Errorf("job archive: %w", err)
	}
	ok = true
	return size, nil
}

// archiveHeader reads the archive's size and sha256 from the response header.
func archiveHeader(md metadata.MD) (size int64, sum string, err error) {
	sizes, sums := md.Get(api.MDArchiveSize), md.Get(api.MDArchiveSHA256)
	if len(sizes) != 1 || len(sums) != 1 {
		return 0, "", fmt.Errorf("broken archive: the director sent %d %s and %d %s headers, want one of each", len(sizes), api.MDArchiveSize, len(sums), api.MDArchiveSHA256)
	}
	size, err = strconv.ParseInt(sizes[0], 10, 64)
	if err != nil || size < 0 {
		return 0, "", fmt.Errorf("broken archive: %s %q is not a size", api.MDArchiveSize, sizes[0])
	}
	sum = strings.ToLower(sums[0])
	if b, err := hex.DecodeString(sum); err != nil || len(b) != sha256.Size {
		return 0, "", fmt.Errorf("broken archive: %s %q is not a sha256", api.MDArchiveSHA256, sums[0])
	}
	return size, sum, nil
}
