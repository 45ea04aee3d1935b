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
// fresh job folder. A transfer cut by an unreachable director resumes from
// the bytes already on disk (see partial).
func (e *Envoy) fetch(ctx context.Context, x *experiment) (*fetched, error) {
	start := time.Now()
	path := filepath.Join(x.dir, archiveName)
	var (
		r    received
		held partial
	)
	err := retry(ctx, x.log, "GetExperimentData", func(ctx context.Context) error {
		var err error
		r, err = e.download(ctx, x.id, path, &held)
		return err
	})
	if err != nil {
		os.Remove(path + tmpSuffix) // a partial nobody will resume
		return nil, err
	}
	size := r.size
	x.log.Info("job archive received", api.LogBytes, size, api.LogTook, time.Since(start).Round(time.Millisecond))
	// One open file from here on: what is verified is what is unpacked,
	// whatever becomes of the path meanwhile (a manual approval may take
	// hours).
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open job archive: %w", err)
	}
	defer f.Close()
	if err := e.admit(ctx, x, f, r); err != nil {
		return nil, err
	}

	dir := filepath.Join(x.dir, jobDirName)
	if err := os.RemoveAll(dir); err != nil {
		return nil, fmt.Errorf("remove stale job folder: %w", err)
	}
	if _, err := job.Unpack(f, size, dir, r.limits); err != nil {
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

// partial describes the temporary archive a cut download left: the size
// and sha256 the director announced for the archive it is a prefix of. The
// zero value holds nothing. Only a partial this envoy process wrote during
// this fetch is resumed; its bytes are trusted no more than the director's:
// the whole file is hashed and checked at the end.
type partial struct {
	size int64
	sum  string
}

// download streams the archive of experiment id into path (through a
// temporary file, synced and renamed once it checks out) and returns its
// size, digest, signature and the limits to unpack it under. If held
// describes a temporary file a cut attempt left, it asks the director to
// send only the rest (api.MDOffset); a director that does not, or that now
// announces another archive, gets the file started over. Errors of the
// stream are returned as they are, gRPC statuses that retry can judge, and
// leave the temporary file and held for the next attempt; anything wrong
// with what arrived is an error of its own and removes the file.
func (e *Envoy) download(ctx context.Context, id, path string, held *partial) (received, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	tmp := path + tmpSuffix
	var offset int64
	if held.sum != "" {
		if fi, err := os.Stat(tmp); err == nil && fi.Mode().IsRegular() && fi.Size() <= held.size {
			offset = fi.Size()
			ctx = metadata.AppendToOutgoingContext(ctx, api.MDOffset, strconv.FormatInt(offset, 10))
		}
	}
	stream, err := e.dirc.GetExperimentData(ctx, &directorpb.GetExperimentDataRequest{ExperimentName: id, CollaboratorName: e.cfg.Name})
	if err != nil {
		return received{}, err
	}
	md, err := stream.Header()
	if err != nil {
		return received{}, err
	}
	size, sum, herr := archiveHeader(md)
	if herr != nil {
		// A director that failed the call sends no headers at all; its
		// status is the better error.
		if _, err := stream.Recv(); err != nil && !errors.Is(err, io.EOF) {
			return received{}, err
		}
		return received{}, herr
	}
	// Before a byte lands on the site's disk: an archive cannot be larger
	// than what it may unpack to, plus its directory.
	if most := maxArchiveSize(e.cfg.ArchiveLimits); size > most {
		return received{}, refusal("the job archive is %d bytes, more than this site accepts (%d: --max-unpacked-size and --max-archive-entries)", size, most)
	}
	if offset > 0 && (size != held.size || sum != held.sum || md.Get(api.MDOffset) == nil || md.Get(api.MDOffset)[0] != strconv.FormatInt(offset, 10)) {
		offset = 0 // another archive, or a director that sends it all
	}

	flags := os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	if offset > 0 {
		flags = os.O_RDWR
	}
	f, err := os.OpenFile(tmp, flags, 0o600)
	if err != nil {
		return received{}, fmt.Errorf("job archive: %w", err)
	}
	*held = partial{size: size, sum: sum}
	ok, keep := false, false
	defer func() {
		if !ok {
			f.Close()
			if !keep {
				os.Remove(tmp)
				*held = partial{}
			}
		}
	}()
	// What is held is hashed again from the disk (the SkipWriter lets the
	// hash see it without writing it twice), so the sum checked at the
	// end is the file's, whatever became of it between attempts.
	hw := job.NewHashWriter(job.NewSkipWriter(f, offset))
	defer hw.Close()
	if offset > 0 {
		if n, err := io.Copy(hw, io.NewSectionReader(f, 0, offset)); err != nil || n != offset {
			return received{}, fmt.Errorf("job archive: reread the %d bytes held: %d read, %v", offset, n, err)
		}
		if err := f.Truncate(offset); err != nil {
			return received{}, fmt.Errorf("job archive: %w", err)
		}
		if _, err := f.Seek(offset, io.SeekStart); err != nil {
			return received{}, fmt.Errorf("job archive: %w", err)
		}
	}
	total := offset
	for n := 1; ; n++ {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			keep = true // the stream broke: resume from what arrived
			return received{}, err
		}
		data := msg.GetNpbytes()
		if int64(msg.GetSize()) != int64(len(data)) {
			return received{}, fmt.Errorf("broken archive: chunk %d has size %d but %d bytes", n, msg.GetSize(), len(data))
		}
		if total += int64(len(data)); total > size {
			return received{}, fmt.Errorf("broken archive: more than the %d bytes the director announced", size)
		}
		e.prom.receivedBytes(BytesArchives, int64(len(data)))
		if _, err := hw.Write(data); err != nil {
			return received{}, fmt.Errorf("job archive: %w", err)
		}
	}
	if total != size {
		return received{}, fmt.Errorf("broken archive: received %d bytes, the director announced %d", total, size)
	}
	hw.Close()
	if got := hw.Sum(); got != sum {
		return received{}, fmt.Errorf("broken archive: its sha256 is %s, the director announced %s", got, sum)
	}
	if err := f.Sync(); err != nil {
		return received{}, fmt.Errorf("job archive: %w", err)
	}
	if err := f.Close(); err != nil {
		return received{}, fmt.Errorf("job archive: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return received{}, fmt.Errorf("job archive: %w", err)
	}
	ok = true
	*held = partial{}
	r := received{size: size, sha256: sum, limits: archiveLimits(md, e.cfg.ArchiveLimits)}
	if v := md.Get(api.MDJobSignature); len(v) == 1 {
		r.signature = []byte(v[0])
	}
	return r, nil
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
