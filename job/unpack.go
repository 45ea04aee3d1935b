package job

import (
	"archive/zip"
	"compress/flate"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"unicode/utf8"
)

const (
	// DefaultMaxUnpacked is the default cap on a job's unpacked size.
	DefaultMaxUnpacked = 20 << 30
	// DefaultMaxFiles is the default cap on a job archive's entries.
	DefaultMaxFiles = 100_000
	// DefaultMaxRatio is the default cap on how many times an entry may
	// expand when it is unpacked.
	DefaultMaxRatio = 200
	// DefaultMaxArchiveRatio is the default cap on how many times a whole
	// archive may expand: many small entries, each under the per-entry
	// check's floor, add up.
	DefaultMaxArchiveRatio = 200

	// ratioFloor is the unpacked size up to which an entry's ratio is not
	// checked: tiny, very compressible files (a run of spaces) are harmless.
	ratioFloor = 1 << 20
	// maxPathLen and maxElemLen bound entry names; longer ones would fail
	// on common file systems anyway.
	maxPathLen = 4096
	maxElemLen = 255
	// cdBytesPerFile is the central directory size allowed per permitted
	// entry. archive/zip keeps the whole central directory in memory, and
	// reads all of it before any of our checks run, so its size is what
	// bounds memory for a hostile archive; this leaves room for long names.
	cdBytesPerFile = 512
)

// Limits caps what an untrusted archive may unpack to. A zero or negative
// field takes its default.
type Limits struct {
	// MaxUnpacked caps the total unpacked bytes (default 20 GiB).
	MaxUnpacked int64
	// MaxFiles caps the number of entries, folders included (default 100,000).
	MaxFiles int
	// MaxRatio caps unpacked/compressed size for each entry above 1 MiB
	// unpacked (default 200); deflate reaches about 1000 on runs of zeros.
	MaxRatio int64
	// MaxArchiveRatio caps the total unpacked size over the archive's
	// size, for archives that unpack to more than 1 MiB (default 200).
	MaxArchiveRatio int64
}

// DefaultLimits returns the limits the director and envoys use unless
// configured otherwise.
func DefaultLimits() Limits {
	return Limits{MaxUnpacked: DefaultMaxUnpacked, MaxFiles: DefaultMaxFiles, MaxRatio: DefaultMaxRatio, MaxArchiveRatio: DefaultMaxArchiveRatio}
}

// WithDefaults returns l with its zero or negative fields set to the
// defaults.
func (l Limits) WithDefaults() Limits { return l.withDefaults() }

func (l Limits) withDefaults() Limits {
	d := DefaultLimits()
	if l.MaxUnpacked <= 0 {
		l.MaxUnpacked = d.MaxUnpacked
	}
	if l.MaxFiles <= 0 {
		l.MaxFiles = d.MaxFiles
	}
	if l.MaxRatio <= 0 {
		l.MaxRatio = d.MaxRatio
	}
	if l.MaxArchiveRatio <= 0 {
		l.MaxArchiveRatio = d.MaxArchiveRatio
	}
	return l
}

// Info describes a job archive that passed Inspect.
type Info struct {
	// Manifest is the archive's job.json, parsed and validated, or the
	// plan of an OpenFL workspace (ParsePlan), parsed but without the
	// name and envoys a frontend's submission gives it.
	Manifest *Manifest
	// Root is "" when job.json sits at the top of the archive, or "top/"
	// when everything sits in one top folder holding job.json; Unpack
	// strips it.
	Root string
	// Files is the number of regular files; folders are not counted.
	Files int
	// Unpacked is the sum of the files' declared unpacked sizes.
	Unpacked int64
}

// Inspect checks the zip archive in r (size bytes) without trusting it:
// every entry has a relative, clean, unique name and is a regular file or a
// folder; the entry count, the declared unpacked total and each entry's
// expansion ratio are within lim; entries use only the stored and deflated
// methods and their data lies inside the archive without overlapping; and
// job.json, at the top or in the single top folder, parses and validates,
// or, without one, an OpenFL workspace's plan/plan.yaml at the top parses.
// File contents other than job.json are not read.
//
// Errors about the archive wrap ErrInvalid and name the entry at fault;
// errors reading r do not.
func Inspect(r io.ReaderAt, size int64, lim Limits) (*Info, error) {
	info, _, err := inspect(r, size, lim.withDefaults())
	return info, err
}

func inspect(r io.ReaderAt, size int64, lim Limits) (*Info, *zip.Reader, error) {
	if size < 0 {
		return nil, nil, fmt.Errorf("job archive: negative size %d", size)
	}
	budget := int64(1 << 20)
	if n := int64(lim.MaxFiles); n < (1<<62)/cdBytesPerFile {
		budget += n * cdBytesPerFile
	} else {
		budget = 1 << 62
	}
	br := &archiveReaderAt{r: r, size: size, left: budget}
	zr, err := zip.NewReader(br, size)
	br.left = -1 // the directory is read; entries may be read freely
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		// ErrInsecurePath (GODEBUG zipinsecurepath=0) comes with a usable
		// reader; the checks below say more precisely what is wrong.
		switch {
		case errors.Is(err, errBudget):
			return nil, nil, invalidf("job archive: its central directory is larger than %s: too many entries or names too long", formatSize(budget))
		case isFormatErr(err):
			return nil, nil, invalidf("job archive: not a zip file: %w", err)
		}
		return nil, nil, fmt.Errorf("read job archive: %w", err)
	}
	if n := len(zr.File); n > lim.MaxFiles {
		return nil, nil, invalidf("job archive: %d entries exceeds the limit of %d", n, lim.MaxFiles)
	}

	type span struct {
		start, end int64
		name       string
	}
	var (
		info  = &Info{}
		names = make(map[string]bool, len(zr.File)) // name without trailing slash -> is a folder
		files = make(map[string]*zip.File, len(zr.File))
		spans = make([]span, 0, len(zr.File))
		total uint64
	)
	for _, f := range zr.File {
		name := f.Name
		if name == "" {
			return nil, nil, invalidf("job archive: an entry has an empty name")
		}
		if len(name) > maxPathLen {
			return nil, nil, invalidf("job archive: entry %q... is longer than %d bytes", name[:64], maxPathLen)
		}
		if why := checkName(name); why != "" {
			return nil, nil, invalidf("job archive: entry %q %s", name, why)
		}
		isDir := strings.HasSuffix(name, "/")
		mode := f.Mode()
		switch {
		case mode&fs.ModeSymlink != 0:
			return nil, nil, invalidf("job archive: entry %q is a symbolic link", name)
		case mode.Type()&^fs.ModeDir != 0:
			return nil, nil, invalidf("job archive: entry %q is not a regular file or folder (%v)", name, mode.Type())
		case mode.IsDir() && !isDir:
			return nil, nil, invalidf("job archive: entry %q is marked as a folder but its name does not end in \"/\"", name)
		case f.Flags&0x1 != 0:
			return nil, nil, invalidf("job archive: entry %q is encrypted", name)
		case f.Method != zip.Store && f.Method != zip.Deflate:
			return nil, nil, invalidf("job archive: entry %q uses compression method %d; only stored (0) and deflated (8) are supported", name, f.Method)
		}
		key := strings.TrimSuffix(name, "/")
		if _, dup := names[key]; dup {
			return nil, nil, invalidf("job archive: entry %q appears twice", name)
		}
		names[key] = isDir
		if isDir {
			if f.UncompressedSize64 != 0 || f.CompressedSize64 != 0 {
				return nil, nil, invalidf("job archive: entry %q is a folder but holds data", name)
			}
			continue
		}
		files[key] = f
		info.Files++

		unpacked, packed := f.UncompressedSize64, f.CompressedSize64
		total = addSat(total, unpacked)
		if f.Method == zip.Store && packed != unpacked {
			return nil, nil, invalidf("job archive: entry %q is stored but declares %d bytes packed and %d unpacked", name, packed, unpacked)
		}
		if unpacked > ratioFloor && unpacked/max(packed, 1) > uint64(lim.MaxRatio) {
			return nil, nil, invalidf("job archive: entry %q expands %d times (%s from %s); the limit is %d",
				name, unpacked/max(packed, 1), formatSize(clampInt64(unpacked)), formatSize(clampInt64(packed)), lim.MaxRatio)
		}
		off, err := f.DataOffset()
		if err != nil {
			return nil, nil, archiveReadErr(err, name)
		}
		if off < 0 || off > size || packed > uint64(size-off) {
			return nil, nil, invalidf("job archive: entry %q: its data runs past the end of the archive", name)
		}
		if packed > 0 {
			spans = append(spans, span{off, off + int64(packed), name})
		}
	}
	if total > uint64(lim.MaxUnpacked) {
		return nil, nil, invalidf("job archive: unpacked size %s exceeds the limit of %s", formatSize(clampInt64(total)), formatSize(lim.MaxUnpacked))
	}
	if total > ratioFloor && total/uint64(max(size, 1)) > uint64(lim.MaxArchiveRatio) {
		return nil, nil, invalidf("job archive: expands %d times as a whole (%s from %s); the limit is %d",
			total/uint64(max(size, 1)), formatSize(clampInt64(total)), formatSize(size), lim.MaxArchiveRatio)
	}
	info.Unpacked = int64(total)

	// Entries sharing their data are the trick of the zip bombs that get
	// past per-entry ratio checks.
	slices.SortFunc(spans, func(a, b span) int { return int(min(max(a.start-b.start, -1), 1)) })
	for i := 1; i < len(spans); i++ {
		if spans[i].start < spans[i-1].end {
			return nil, nil, invalidf("job archive: entries %q and %q share data", spans[i-1].name, spans[i].name)
		}
	}

	// A file cannot also be a folder that other entries live in.
	for key := range names {
		for dir := key; ; {
			i := strings.LastIndexByte(dir, '/')
			if i < 0 {
				break
			}
			dir = dir[:i]
			if isDir, ok := names[dir]; ok && !isDir {
				return nil, nil, invalidf("job archive: entry %q lies under %q, which is a file", key, dir)
			}
		}
	}

	mf := files[ManifestFile]
	if mf == nil {
		if top := singleTop(zr.File); top != "" {
			if mf = files[top+ManifestFile]; mf != nil {
				info.Root = top
			}
		}
	}
	if mf != nil {
		if info.Manifest, err = readArchivedManifest(mf); err != nil {
			return nil, nil, err
		}
		return info, zr, nil
	}
	// An OpenFL workspace, as OpenFL's frontend zips it: its plan at the top.
	if pf := files[PlanFile]; pf != nil {
		if info.Manifest, err = readArchivedPlan(pf); err != nil {
			return nil, nil, err
		}
		return info, zr, nil
	}
	return nil, nil, invalidf("job archive: no %s at the top of the archive (or of its single top folder), nor an OpenFL workspace's %s", ManifestFile, PlanFile)
}

// singleTop returns "top/" when every entry lies in the folder top, or "".
func singleTop(files []*zip.File) string {
	if len(files) == 0 {
		return ""
	}
	i := strings.IndexByte(files[0].Name, '/')
	if i < 0 {
		return ""
	}
	top := files[0].Name[:i+1]
	for _, f := range files {
		if !strings.HasPrefix(f.Name, top) {
			return ""
		}
	}
	return top
}

func readArchivedManifest(f *zip.File) (*Manifest, error) {
	label := "job archive: " + f.Name
	if f.UncompressedSize64 > MaxManifestSize {
		return nil, invalidf("%s: %s exceeds the limit of %s", label, formatSize(clampInt64(f.UncompressedSize64)), formatSize(MaxManifestSize))
	}
	rc, err := f.Open()
	if err != nil {
		return nil, archiveReadErr(err, f.Name)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, MaxManifestSize+1))
	if err != nil {
		return nil, archiveReadErr(err, f.Name)
	}
	m, err := ParseManifest(b)
	if err != nil {
		return nil, relabel(err, label)
	}
	return m, nil
}

// readArchivedPlan reads an OpenFL workspace's plan. The Manifest it
// returns is not validated: it has no name or envoys until a frontend's
// submission gives them.
func readArchivedPlan(f *zip.File) (*Manifest, error) {
	label := "job archive: " + f.Name
	if f.UncompressedSize64 > MaxPlanSize {
		return nil, invalidf("%s: %s exceeds the limit of %s", label, formatSize(clampInt64(f.UncompressedSize64)), formatSize(MaxPlanSize))
	}
	rc, err := f.Open()
	if err != nil {
		return nil, archiveReadErr(err, f.Name)
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, MaxPlanSize+1))
	if err != nil {
		return nil, archiveReadErr(err, f.Name)
	}
	m, err := ParsePlan(b)
	if err != nil {
		return nil, relabel(err, label)
	}
	return m, nil
}

// checkName says what is wrong with a slash-separated entry name, or returns
// "" if it is a clean relative path that stays inside the folder it is
// unpacked in, on any operating system. Folder names end in "/".
func checkName(name string) string {
	switch {
	case name == "":
		return "is empty"
	case len(name) > maxPathLen:
		return fmt.Sprintf("is longer than %d bytes", maxPathLen)
	case strings.IndexByte(name, 0) >= 0:
		return "contains a NUL byte"
	case strings.IndexByte(name, '\\') >= 0:
		return "contains a backslash"
	case !utf8.ValidString(name):
		return "is not valid UTF-8"
	case name[0] == '/':
		return "is an absolute path"
	case len(name) >= 2 && name[1] == ':' && ('a' <= name[0] && name[0] <= 'z' || 'A' <= name[0] && name[0] <= 'Z'):
		return "starts with a drive letter"
	}
	elems := strings.Split(strings.TrimSuffix(name, "/"), "/")
	if slices.Contains(elems, "..") {
		return "escapes the job folder"
	}
	for _, e := range elems {
		switch {
		case e == "" || e == ".":
			return "is not a clean path"
		case len(e) > maxElemLen:
			return fmt.Sprintf("has a part longer than %d bytes", maxElemLen)
		}
	}
	return ""
}

// Unpack inspects the archive like Inspect and extracts it into dst,
// stripping Info.Root. dst is created (mode 0700) if missing and must be
// empty if it exists. Folders get mode 0755 and files 0644, or 0755 when the
// archive gave them any execute bit (both less the umask). Nothing is
// trusted: every file is created exclusively under dst through an os.Root,
// its size is held to what the archive declared, and its CRC is checked.
//
// On any error Unpack removes what it extracted: dst itself if it created
// it, dst's contents otherwise.
func Unpack(r io.ReaderAt, size int64, dst string, lim Limits) (*Info, error) {
	lim = lim.withDefaults()
	info, zr, err := inspect(r, size, lim)
	if err != nil {
		return nil, err
	}
	created, err := prepareDst(dst)
	if err != nil {
		return nil, err
	}
	if err := extract(zr, info, dst, lim); err != nil {
		if created {
			os.RemoveAll(dst)
		} else {
			clearDir(dst)
		}
		return nil, err
	}
	return info, nil
}

// UnpackIn is Unpack into a new folder name directly under parent,
// through parent: name must not exist (a symlink planted there is refused,
// not followed), nothing is written outside it, and on any error it is
// removed with what was extracted. It is for a folder that untrusted input
// names, as a download's job id.
func UnpackIn(r io.ReaderAt, size int64, parent *os.Root, name string, lim Limits) (*Info, error) {
	if !filepath.IsLocal(name) || filepath.Base(name) != name {
		return nil, fmt.Errorf("unpack job: %q is not a name in the folder", name)
	}
	lim = lim.withDefaults()
	info, zr, err := inspect(r, size, lim)
	if err != nil {
		return nil, err
	}
	if err := parent.Mkdir(name, 0o700); err != nil {
		return nil, fmt.Errorf("unpack job: %w", err)
	}
	root, err := parent.OpenRoot(name)
	if err == nil {
		err = extractIn(zr, info, root, lim)
		root.Close()
	}
	if err != nil {
		parent.RemoveAll(name)
		return nil, err
	}
	return info, nil
}

func prepareDst(dst string) (created bool, err error) {
	fi, err := os.Stat(dst)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if err := os.Mkdir(dst, 0o700); err != nil {
			return false, fmt.Errorf("unpack job: %w", err)
		}
		return true, nil
	case err != nil:
		return false, fmt.Errorf("unpack job: %w", err)
	case !fi.IsDir():
		return false, fmt.Errorf("unpack job: %s is not a folder", dst)
	}
	d, err := os.Open(dst)
	if err != nil {
		return false, fmt.Errorf("unpack job: %w", err)
	}
	defer d.Close()
	names, err := d.Readdirnames(1)
	if len(names) > 0 {
		return false, fmt.Errorf("unpack job: %s is not empty", dst)
	}
	if err != nil && err != io.EOF {
		return false, fmt.Errorf("unpack job: %w", err)
	}
	return false, nil
}

// clearDir removes dst's contents, best effort: it runs after another error.
func clearDir(dst string) {
	entries, _ := os.ReadDir(dst)
	for _, e := range entries {
		os.RemoveAll(filepath.Join(dst, e.Name()))
	}
}

func extract(zr *zip.Reader, info *Info, dst string, lim Limits) error {
	absDst, err := filepath.Abs(dst)
	if err != nil {
		return fmt.Errorf("unpack job: %w", err)
	}
	root, err := os.OpenRoot(absDst)
	if err != nil {
		return fmt.Errorf("unpack job: %w", err)
	}
	defer root.Close()
	return extractIn(zr, info, root, lim)
}

// extractIn writes the archive's entries under root, which holds every
// path to itself: no name, .. or symlink reaches outside it.
func extractIn(zr *zip.Reader, info *Info, root *os.Root, lim Limits) error {
	made := map[string]bool{".": true} // folders known to exist, slash-separated
	mkdir := func(dir string) error {
		if made[dir] {
			return nil
		}
		if err := root.MkdirAll(filepath.FromSlash(dir), 0o755); err != nil {
			return fmt.Errorf("unpack job: %w", err)
		}
		for ; !made[dir]; dir = path.Dir(dir) {
			made[dir] = true
		}
		return nil
	}

	buf := make([]byte, bufSize)
	var total int64
	for _, f := range zr.File {
		rel, ok := strings.CutPrefix(f.Name, info.Root)
		if !ok {
			return invalidf("job archive: entry %q lies outside %q", f.Name, info.Root)
		}
		isDir := strings.HasSuffix(rel, "/")
		rel = strings.TrimSuffix(rel, "/")
		if rel == "" {
			continue // the top folder itself
		}
		// Inspect has checked the name already; check the path we will
		// really use, with this system's rules, once more.
		osRel := filepath.FromSlash(rel)
		if !filepath.IsLocal(osRel) {
			return invalidf("job archive: entry %q is not a local path on this system", f.Name)
		}
		if isDir {
			if err := mkdir(rel); err != nil {
				return err
			}
			continue
		}
		if err := mkdir(path.Dir(rel)); err != nil {
			return err
		}
		n, err := extractFile(root, f, osRel, buf)
		if err != nil {
			return err
		}
		if total += n; total > lim.MaxUnpacked {
			return invalidf("job archive: unpacked size exceeds the limit of %s", formatSize(lim.MaxUnpacked))
		}
	}
	return nil
}

// extractFile writes entry f to name under root and returns its size.
func extractFile(root *os.Root, f *zip.File, name string, buf []byte) (int64, error) {
	perm := fs.FileMode(0o644)
	if f.Mode()&0o111 != 0 {
		perm = 0o755
	}
	rc, err := f.Open()
	if err != nil {
		return 0, archiveReadErr(err, f.Name)
	}
	defer rc.Close()
	out, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if errors.Is(err, fs.ErrExist) {
		// Inspect refuses duplicates, so on a case-insensitive file system
		// two names that differ in case are the likely cause.
		return 0, invalidf("job archive: entry %q collides with another entry on this file system", f.Name)
	}
	if err != nil {
		return 0, fmt.Errorf("unpack job: %w", err)
	}
	declared := int64(f.UncompressedSize64) // at most MaxUnpacked, checked by Inspect
	src := &errReader{r: io.LimitReader(rc, declared+1)}
	// The struct hides out's ReadFrom, which would not use buf.
	n, err := io.CopyBuffer(struct{ io.Writer }{out}, src, buf)
	if cerr := out.Close(); err == nil && cerr != nil {
		err = cerr
	}
	switch {
	case n > declared || errors.Is(src.err, zip.ErrFormat):
		// archive/zip reports ErrFormat when an entry's data goes on past
		// its declared size.
		return n, invalidf("job archive: entry %q is larger than declared (%d bytes)", f.Name, declared)
	case src.err != nil:
		return n, archiveReadErr(src.err, f.Name)
	case err != nil:
		return n, fmt.Errorf("unpack job: %w", err)
	}
	return n, nil
}

// errReader remembers the error its reader returned, so a copy's read and
// write failures can be told apart.
type errReader struct {
	r   io.Reader
	err error
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF {
		e.err = err
	}
	return n, err
}

// isFormatErr reports whether err says the archive is malformed, as opposed
// to it being unreadable.
func isFormatErr(err error) bool {
	var corrupt flate.CorruptInputError
	var internal flate.InternalError
	return errors.Is(err, zip.ErrFormat) || errors.Is(err, zip.ErrAlgorithm) ||
		errors.Is(err, zip.ErrChecksum) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, io.EOF) || errors.Is(err, errOutside) ||
		errors.As(err, &corrupt) || errors.As(err, &internal)
}

func archiveReadErr(err error, name string) error {
	if isFormatErr(err) {
		return invalidf("job archive: entry %q: %w", name, err)
	}
	return fmt.Errorf("read job archive: entry %q: %w", name, err)
}

var (
	// errBudget is a read past an archiveReaderAt's allowance.
	errBudget = errors.New("read budget exhausted")
	// errOutside is a read an archive's offsets sent outside the archive.
	errOutside = errors.New("offset outside the archive")
)

// archiveReaderAt guards the reads archive/zip makes. Offsets come from the
// archive itself, so a read outside [0, size) is the archive's fault, not
// the reader's. And while left >= 0 it limits the bytes read, which keeps
// zip.NewReader from reading, and holding in memory, a central directory far
// larger than any archive within the limits needs.
type archiveReaderAt struct {
	r    io.ReaderAt
	size int64
	left int64
}

func (a *archiveReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 || off > a.size {
		return 0, errOutside
	}
	short := false
	if int64(len(p)) > a.size-off {
		p = p[:a.size-off]
		short = true
	}
	if a.left >= 0 {
		if int64(len(p)) > a.left {
			return 0, errBudget
		}
		a.left -= int64(len(p))
	}
	n, err := a.r.ReadAt(p, off)
	if err == nil && short {
		err = io.EOF
	}
	return n, err
}

func addSat(a, b uint64) uint64 {
	if a+b < a {
		return ^uint64(0)
	}
	return a + b
}

func clampInt64(u uint64) int64 {
	if u > 1<<63-1 {
		return 1<<63 - 1
	}
	return int64(u)
}
