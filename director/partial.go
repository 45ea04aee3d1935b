package director

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/director/metrics"
	"github.com/fedplane/fedplane/job"
)

// Partial is a job archive received in parts, by an upload that resumes
// after a cut (README "Transfers that resume"): the first Held bytes are in
// a file under the data dir's partials/, which Keep makes durable so that
// the upload resumes after a restart too (partials.go). Its bytes are
// trusted no more than any upload's: FinishPartial hashes the whole file
// before the job is looked at. Discard it once done with it.
type Partial struct {
	f    *os.File
	held int64
	info UploadInfo
	// hw hashes the first hashed bytes of f as they are received, so that
	// a whole upload is read once, not once more to check it. It is nil
	// for a part loaded after a restart, which FinishPartial hashes from
	// the file instead.
	hw     *job.HashWriter
	hashed int64
}

// UploadInfo is what the director records of a resumable upload with its
// bytes, for a resume after a restart.
type UploadInfo struct {
	ID string // the client's upload id, 32 lowercase hex digits
	// Owner is the identity that began the upload, the only one that may
	// resume it; Caller is the key of the per-caller cap.
	Owner, Caller string
	Size          int64  // the whole archive's, as announced
	SHA256        string // its sha256, as announced
	// Created is when the upload began; Last when an attempt last ended.
	Created, Last time.Time
}

// NewPartial starts a resumable upload described by info, holding nothing
// yet.
func (d *Director) NewPartial(info UploadInfo) (*Partial, error) {
	f, err := d.createPart(partialUpload)
	if err != nil {
		return nil, err
	}
	return &Partial{f: f, info: info}, nil
}

// Held is how many bytes of the archive p holds.
func (p *Partial) Held() int64 { return p.held }

// Info describes p's upload.
func (p *Partial) Info() UploadInfo { return p.info }

// Keep makes the bytes p holds durable, with its description as of last,
// so that the upload resumes after a restart. Until it returns, a restart
// resumes from what an earlier Keep recorded, or starts over.
func (p *Partial) Keep(last time.Time) error {
	p.info.Last = last
	if p.held == 0 || p.f == nil {
		return nil
	}
	i := p.info
	return savePart(p.f, partialMeta{Kind: partialUpload, ID: i.ID, Owner: i.Owner, Caller: i.Caller,
		Size: i.Size, SHA256: i.SHA256, Held: p.held, Created: i.Created, Last: i.Last})
}

// Close closes p's file and leaves it, and what Keep recorded, on disk
// for the next start, when the director stops.
func (p *Partial) Close() {
	p.stopHash()
	if p.f != nil {
		p.f.Close()
		p.f = nil
	}
}

// Discard removes p's file and what Keep recorded.
func (p *Partial) Discard() {
	p.stopHash()
	if p.f != nil {
		removePart(p.f)
		p.f = nil
	}
}

// stopHash ends p's hashing goroutine, if it runs.
func (p *Partial) stopHash() {
	if p.hw != nil {
		p.hw.Close()
		p.hw = nil
	}
}

// HeldUploads returns the partial uploads that an earlier run kept (Keep)
// and not within ttl of now unused, once: the admin port's table of
// uploads takes them at its start. The others are removed.
func (d *Director) HeldUploads(ttl time.Duration, now time.Time) []*Partial {
	if !d.heldUploadsTaken.CompareAndSwap(false, true) {
		return nil
	}
	var ps []*Partial
	for _, h := range loadParts(d.log, d.cfg.DataDir, partialUpload, d.cfg.MaxJobSize, ttl, now) {
		m := h.meta
		ps = append(ps, &Partial{f: h.f, held: m.Held, info: UploadInfo{ID: m.ID, Owner: m.Owner, Caller: m.Caller,
			Size: m.Size, SHA256: m.SHA256, Created: m.Created, Last: m.Last}})
	}
	return ps
}

// ReceivePart appends to p what copyFn writes, up to size bytes in all
// (the archive's announced size, itself at most MaxJobSize). Held counts
// what reached the file even when copyFn fails part way, as a cut
// connection makes it: the upload resumes from there.
func (d *Director) ReceivePart(p *Partial, size int64, copyFn func(w io.Writer) (int64, error)) error {
	if size > d.cfg.MaxJobSize {
		return fmt.Errorf("%w: job archive of %d bytes is larger than the director's cap of %d", api.ErrTooLarge, size, d.cfg.MaxJobSize)
	}
	if _, err := p.f.Seek(p.held, io.SeekStart); err != nil {
		return fmt.Errorf("resume upload: %w", err)
	}
	if p.hw == nil && p.held == 0 {
		p.hw = job.NewHashWriter(p.f)
	}
	var w io.Writer = p.f
	hashing := p.hw != nil && p.hashed == p.held
	if hashing {
		w = p.hw
	}
	cw := &countWriter{w: w}
	_, err := copyFn(&capWriter{w: cw, left: size - p.held, what: "job archive larger than it was announced"})
	p.held += cw.n
	if hashing {
		p.hashed += cw.n
	}
	d.metrics.Received(metrics.KindArchives, cw.n)
	return err
}

// FinishPartial turns a partial that holds all size bytes into an Upload,
// after checking the whole file's sha256 against sum, the one the client
// announced when it began. It owns p: p is discarded on error and belongs
// to the Upload otherwise.
func (d *Director) FinishPartial(p *Partial, size int64, sum string) (*Upload, error) {
	// Complete or refused, it is no longer held for a resume.
	forgetPart(p.f.Name())
	if p.held != size {
		p.Discard()
		return nil, fmt.Errorf("%w: upload holds %d bytes, the archive was announced as %d", api.ErrDataLoss, p.held, size)
	}
	var got string
	if p.hw != nil && p.hashed == size {
		p.hw.Close()
		got = p.hw.Sum()
	} else {
		h := sha256.New()
		if _, err := io.Copy(h, io.NewSectionReader(p.f, 0, size)); err != nil {
			p.Discard()
			return nil, fmt.Errorf("read upload: %w", err)
		}
		got = hex.EncodeToString(h.Sum(nil))
	}
	p.stopHash()
	if got != sum {
		p.Discard()
		return nil, fmt.Errorf("%w: the archive received has sha256 %s, the upload announced %s", api.ErrDataLoss, got, sum)
	}
	u := &Upload{f: p.f, size: size, sha256: sum}
	p.f = nil
	return u, nil
}

// countWriter counts the bytes its writer took.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n += int64(n)
	return n, err
}
