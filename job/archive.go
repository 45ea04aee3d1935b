package job

import (
	"archive/zip"
	"bufio"
	"compress/flate"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

const (
	// bufSize is the read and write buffer size; large enough that a
	// stored file streams at close to disk speed.
	bufSize = 256 << 10
	// sampleSize is how much of a file is test-compressed to decide
	// between storing and deflating it.
	sampleSize = 64 << 10
)

// An Archive is a plan for zipping a job folder: the list of its entries
// with their sizes, modes, times and compression methods, and the exact size
// of the zip that WriteTo will produce. Knowing the size first lets fladmin
// announce the body length before streaming it, with no temp copy.
//
// An Archive holds no open files. If the folder changes between NewArchive
// and WriteTo, WriteTo fails instead of sending something else.
type Archive struct {
	dir      string
	manifest *Manifest
	entries  []entry
	files    int
	size     int64
	// stamp, when set, is the time every entry's header carries in place
	// of its file's (SetTime).
	stamp time.Time
}

// entry is one planned zip entry.
type entry struct {
	name    string      // slash-separated and relative; folders end in "/"
	path    string      // the file on disk
	mode    fs.FileMode // permission bits, and fs.ModeDir for folders
	size    int64
	modTime time.Time
	method  uint16 // zip.Store or zip.Deflate
	offset  int64  // where the entry's data starts in the zip, found by the dry run
}

// NewArchive plans the zip of the job folder dir. It walks the folder in
// lexical order, refuses symbolic links and special files, requires a valid
// job.json at the top, picks per file whether to store or deflate it, and
// computes the zip's exact size by a dry run that compresses the files to be
// deflated and feeds zeros in place of the ones to be stored.
//
// Problems with the folder's content wrap ErrInvalid.
func NewArchive(dir string) (*Archive, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("job folder: %w", err)
	}
	if !fi.IsDir() {
		return nil, invalidf("job folder: %s is not a folder", dir)
	}
	a := &Archive{dir: dir}
	if a.manifest, err = readManifest(dir); err != nil {
		return nil, err
	}

	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return fmt.Errorf("job folder: %w", err)
		}
		if path == dir {
			return nil
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return fmt.Errorf("job folder: %w", err)
		}
		name := filepath.ToSlash(rel)
		if why := checkName(name); why != "" {
			return invalidf("job folder: %q cannot be sent: its name %s", name, why)
		}
		info, err := d.Info()
		if err != nil {
			return fmt.Errorf("job folder: %w", err)
		}
		e := entry{name: name, path: path, modTime: info.ModTime()}
		switch mode := info.Mode(); {
		case mode&fs.ModeSymlink != 0:
			return invalidf("job folder: %q is a symbolic link; copy the file instead", name)
		case mode.IsDir():
			e.name += "/"
			e.mode = fs.ModeDir | mode.Perm()
		case mode.IsRegular():
			e.mode = mode.Perm()
			e.size = info.Size()
			a.files++
		default:
			return invalidf("job folder: %q is not a regular file or folder (%v)", name, mode.Type())
		}
		a.entries = append(a.entries, e)
		return nil
	})
	if err != nil {
		return nil, err
	}

	if err := a.chooseMethods(); err != nil {
		return nil, err
	}
	n, err := a.write(io.Discard, true)
	if err != nil {
		return nil, err
	}
	a.size = n
	return a, nil
}

// readManifest reads and validates dir's job.json; its errors name the file.
func readManifest(dir string) (*Manifest, error) {
	path := filepath.Join(dir, ManifestFile)
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, invalidf("job folder: no %s in %s", ManifestFile, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("job folder: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, invalidf("job folder: %s is not a regular file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("job folder: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxManifestSize+1))
	if err != nil {
		return nil, fmt.Errorf("job folder: read %s: %w", path, err)
	}
	m, err := ParseManifest(b)
	if err != nil {
		return nil, relabel(err, path)
	}
	return m, nil
}

// chooseMethods deflates a file when BestSpeed shrinks its first 64 KiB
// below 90%; data that is random or already compressed (model weights often
// are close to it) is stored, which costs no CPU at either end.
func (a *Archive) chooseMethods() error {
	fw, _ := flate.NewWriter(nil, flate.BestSpeed)
	buf := make([]byte, sampleSize)
	for i := range a.entries {
		e := &a.entries[i]
		e.method = zip.Store
		if e.mode.IsDir() || e.size == 0 {
			continue
		}
		f, err := os.Open(e.path)
		if err != nil {
			return fmt.Errorf("job folder: %w", err)
		}
		n, err := io.ReadFull(f, buf)
		f.Close()
		if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
			return fmt.Errorf("job folder: read %s: %w", e.path, err)
		}
		var cw countingWriter
		fw.Reset(&cw)
		fw.Write(buf[:n]) // a countingWriter never fails
		fw.Close()
		if cw.n*10 < int64(n)*9 {
			e.method = zip.Deflate
		}
	}
	return nil
}

// Manifest returns the folder's job.json, as parsed and validated.
func (a *Archive) Manifest() *Manifest { return a.manifest }

// Size returns the exact number of bytes WriteTo writes when the folder has
// not changed.
func (a *Archive) Size() int64 { return a.size }

// Files returns the number of regular files in the archive; folders are not
// counted.
func (a *Archive) Files() int { return a.files }

// SetTime makes every entry's header carry t rather than its file's
// modification time, so that folders of the same content zip to the same
// bytes whenever their files were written: a transfer can then resume in
// a zip made again. Files are still checked against their own times while
// they are sent. The zip's size does not change.
func (a *Archive) SetTime(t time.Time) { a.stamp = t }

// WriteFrom writes the zip's bytes from offset off on to w (all of them
// when off is 0) and returns how many it wrote to w. The bytes before off
// are made and dropped, so that a resumed transfer gets exactly the rest of
// the zip that the first attempt began; it fails as WriteTo does.
func (a *Archive) WriteFrom(w io.Writer, off int64) (int64, error) {
	if off < 0 || off > a.size {
		return 0, fmt.Errorf("zip offset %d is outside the archive's %d bytes", off, a.size)
	}
	sw := NewSkipWriter(w, off)
	n, err := a.write(sw, false)
	return max(n-off, 0), err
}

// WriteTo writes the zip to w and returns the number of bytes written. It
// never writes more than Size bytes. If a file changed since NewArchive
// (size, modification time, or content that changes the compressed size) it
// stops with an error saying so; w then holds a partial archive that must
// be discarded, and a connection it was sent on should be closed.
func (a *Archive) WriteTo(w io.Writer) (int64, error) {
	return a.write(w, false)
}

// write produces the zip. The dry run (from NewArchive) records each
// entry's data offset and feeds zeros for stored files: a stored entry's
// bytes differ with content only in the CRC, which has a fixed width. The
// real run reads every file and checks that each entry starts where the dry
// run put it, so a change is blamed on the file that caused it.
func (a *Archive) write(w io.Writer, dry bool) (int64, error) {
	cw := &countingWriter{w: w}
	if !dry {
		cw.limit = a.size
	}
	bw := bufio.NewWriterSize(cw, bufSize)
	zw := zip.NewWriter(bw)
	var fw *flate.Writer
	zw.RegisterCompressor(zip.Deflate, func(out io.Writer) (io.WriteCloser, error) {
		// One compressor for the whole archive: entries are written one
		// after the other, and a flate.Writer is costly to allocate.
		if fw == nil {
			var err error
			fw, err = flate.NewWriter(out, flate.BestSpeed)
			return fw, err
		}
		fw.Reset(out)
		return fw, nil
	})
	buf := make([]byte, bufSize)
	last := -1 // the last file entry written
	for i := range a.entries {
		e := &a.entries[i]
		h := &zip.FileHeader{Name: e.name, Method: e.method, Modified: e.modTime}
		if !a.stamp.IsZero() {
			h.Modified = a.stamp
		}
		h.SetMode(e.mode)
		ew, err := zw.CreateHeader(h)
		if err != nil {
			return cw.n, a.writeErr(err, last)
		}
		if e.mode.IsDir() {
			continue
		}
		if err := zw.Flush(); err != nil {
			return cw.n, a.writeErr(err, last)
		}
		pos := cw.n + int64(bw.Buffered())
		if dry {
			e.offset = pos
		} else if pos != e.offset {
			return cw.n, a.changed(last, "its compressed size differs")
		}
		last = i
		if dry && e.method == zip.Store {
			err = writeZeros(ew, e.size, buf)
		} else {
			err = copyFile(ew, e, buf, dry)
		}
		if err != nil {
			return cw.n, a.writeErr(err, last)
		}
	}
	if err := zw.Close(); err != nil {
		return cw.n, a.writeErr(err, last)
	}
	if err := bw.Flush(); err != nil {
		return cw.n, a.writeErr(err, last)
	}
	if !dry && cw.n != a.size {
		return cw.n, a.changed(last, fmt.Sprintf("the archive came out %d bytes instead of %d", cw.n, a.size))
	}
	return cw.n, nil
}

// writeErr turns the archive's overrunning of its announced size into a
// "changed" error and passes any other error through.
func (a *Archive) writeErr(err error, last int) error {
	if errors.Is(err, errOverrun) {
		return a.changed(last, fmt.Sprintf("the archive grew past the %d bytes announced", a.size))
	}
	return err
}

// changed reports that the folder changed under WriteTo, blaming the entry
// at index i when there is one.
func (a *Archive) changed(i int, why string) error {
	if i < 0 {
		return fmt.Errorf("job folder changed while it was being sent: %s", why)
	}
	return fmt.Errorf("job folder changed while it was being sent: %q: %s", a.entries[i].name, why)
}

// copyFile copies exactly e.size bytes of e's file to w, and fails if the
// file's size or modification time differ from the plan, before or after.
func copyFile(w io.Writer, e *entry, buf []byte, dry bool) error {
	verb := "sent"
	if dry {
		verb = "read"
	}
	changed := func(why string) error {
		return fmt.Errorf("job folder changed while it was being %s: %q %s", verb, e.name, why)
	}
	f, err := os.Open(e.path)
	if errors.Is(err, fs.ErrNotExist) {
		return changed("was removed")
	}
	if err != nil {
		return fmt.Errorf("job folder: %w", err)
	}
	defer f.Close()
	same := func() error {
		fi, err := f.Stat()
		if err != nil {
			return fmt.Errorf("job folder: %w", err)
		}
		switch {
		case !fi.Mode().IsRegular():
			return changed("is no longer a regular file")
		case fi.Size() != e.size:
			return changed(fmt.Sprintf("was %d bytes and is now %d", e.size, fi.Size()))
		case !fi.ModTime().Equal(e.modTime):
			return changed("was modified")
		}
		return nil
	}
	if err := same(); err != nil {
		return err
	}
	for left := e.size; left > 0; {
		n, err := io.ReadFull(f, buf[:min(int64(len(buf)), left)])
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			left -= int64(n)
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return changed("shrank")
		}
		if err != nil {
			return fmt.Errorf("job folder: read %s: %w", e.path, err)
		}
	}
	if n, _ := f.Read(buf[:1]); n > 0 {
		return changed("grew")
	}
	return same()
}

// writeZeros writes n zero bytes to w.
func writeZeros(w io.Writer, n int64, buf []byte) error {
	clear(buf)
	for n > 0 {
		k := min(int64(len(buf)), n)
		if _, err := w.Write(buf[:k]); err != nil {
			return err
		}
		n -= k
	}
	return nil
}

// errOverrun is a write past a countingWriter's limit.
var errOverrun = errors.New("write past the announced size")

// countingWriter counts the bytes written through it and, with a positive
// limit, refuses to pass on more than that. A nil w discards.
type countingWriter struct {
	w     io.Writer
	n     int64
	limit int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	if c.limit > 0 && c.n+int64(len(p)) > c.limit {
		return 0, errOverrun
	}
	if c.w == nil {
		c.n += int64(len(p))
		return len(p), nil
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
