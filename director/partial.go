package director

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/director/metrics"
)

// Partial is a job archive received in parts, by an upload that resumes
// after a cut (README "Transfers that resume"): the first Held bytes are in
// a temp file under the data dir's tmp/. Its bytes are trusted no more
// than any upload's: FinishPartial hashes the whole file before the job is
// looked at. Discard it once done with it.
type Partial struct {
	f    *os.File
	held int64
}

// NewPartial starts a resumable upload, holding nothing yet.
func (d *Director) NewPartial() (*Partial, error) {
	f, err := d.createTemp("upload-*.part")
	if err != nil {
		return nil, err
	}
	return &Partial{f: f}, nil
}

// Held is how many bytes of the archive p holds.
func (p *Partial) Held() int64 { return p.held }

// Discard removes p's temp file.
func (p *Partial) Discard() {
	if p.f != nil {
		p.f.Close()
		os.Remove(p.f.Name())
		p.f = nil
	}
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
	cw := &countWriter{w: p.f}
	_, err := copyFn(&capWriter{w: cw, left: size - p.held, what: "job archive larger than it was announced"})
	p.held += cw.n
	d.metrics.Received(metrics.KindArchives, cw.n)
	return err
}

// FinishPartial turns a partial that holds all size bytes into an Upload,
// after checking the whole file's sha256 against sum, the one the client
// announced when it began. It owns p: p is discarded on error and belongs
// to the Upload otherwise.
func (d *Director) FinishPartial(p *Partial, size int64, sum string) (*Upload, error) {
	if p.held != size {
		p.Discard()
		return nil, fmt.Errorf("%w: upload holds %d bytes, the archive was announced as %d", api.ErrDataLoss, p.held, size)
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(p.f, 0, size)); err != nil {
		p.Discard()
		return nil, fmt.Errorf("read upload: %w", err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
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
