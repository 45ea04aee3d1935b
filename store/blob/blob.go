// Package blob keeps the director's immutable files: job archives, round
// models, the aggregator's server state, task results and shared training
// logs. A blob is whole or absent: it is written to a local temp file
// (Create), and Commit makes it durable under its key in one step, so a
// row that names a key after Commit returned never names a half-written
// blob.
//
// Two stores implement it. file://PATH (the default, PATH being the data
// dir) keeps blobs as files under PATH, committed with fsync, rename and a
// directory fsync; s3://bucket/prefix keeps them as objects of an
// S3-compatible bucket, which several directors can share. S3 reads go
// through a read-through cache of whole blobs on local disk, because the
// aggregator and the model server read at random offsets, which would be
// one ranged request each.
//
// A key is the path relative to the data dir that rows already hold
// ("experiments/<id>/models/round-0001.safetensors"), with forward slashes;
// ValidKey refuses anything that could leave the store's root.
package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"
)

// Store keeps immutable, whole blobs by key. Its methods are safe for
// concurrent use.
type Store interface {
	// Create creates an empty temp file (mode 0600) under the local data
	// dir's tmp/, which start-up clears. Write the blob into it, then
	// Commit it or close and remove it.
	Create(pattern string) (*os.File, error)
	// Commit makes tmp, a file Create made, durable under key, replacing
	// a blob there. Only after it returns may a row point at key. tmp is
	// closed either way; on error its file may remain for the caller to
	// remove (os.Remove of a missing file is harmless).
	Commit(ctx context.Context, tmp *os.File, key string) error
	// Open opens the blob at key for reading; a missing blob is
	// fs.ErrNotExist.
	Open(ctx context.Context, key string) (*Reader, error)
	// Stat describes the blob at key; a missing blob is fs.ErrNotExist.
	Stat(ctx context.Context, key string) (Info, error)
	// Remove removes the blob at key; a missing one is no error.
	Remove(ctx context.Context, key string) error
	// RemovePrefix removes every blob whose key is under the folder
	// prefix ("experiments/<id>" removes "experiments/<id>/..." and not
	// "experiments/<id>x/...").
	RemovePrefix(ctx context.Context, prefix string) error
	// List calls fn with every blob under the folder prefix, in no set
	// order, until fn returns an error, which List returns. Like
	// RemovePrefix it needs a prefix: the data dir holds more than blobs.
	List(ctx context.Context, prefix string, fn func(Info) error) error
	// Shared reports whether other processes may write to the store
	// (directors sharing a bucket): a blob no row names may then be one
	// being committed elsewhere, not a crash's leftover.
	Shared() bool
}

// Info describes a stored blob.
type Info struct {
	Key     string
	Size    int64
	ModTime time.Time
}

// Reader reads one blob. Blobs are immutable, so a Reader sees the whole
// blob it opened even if the key is removed meanwhile.
type Reader struct {
	f    *os.File
	info Info
}

// newReader wraps f, the blob key. modTime is when the blob was committed;
// zero takes f's.
func newReader(f *os.File, key string, modTime time.Time) (*Reader, error) {
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if modTime.IsZero() {
		modTime = fi.ModTime()
	}
	return &Reader{f: f, info: Info{Key: key, Size: fi.Size(), ModTime: modTime}}, nil
}

// Read reads from the current offset.
func (r *Reader) Read(p []byte) (int, error) { return r.f.Read(p) }

// ReadAt reads at offset off, as io.ReaderAt.
func (r *Reader) ReadAt(p []byte, off int64) (int, error) { return r.f.ReadAt(p, off) }

// Seek sets the offset of the next Read.
func (r *Reader) Seek(off int64, whence int) (int64, error) { return r.f.Seek(off, whence) }

// Size is the blob's size in bytes.
func (r *Reader) Size() int64 { return r.info.Size }

// Key is the key the blob was opened by.
func (r *Reader) Key() string { return r.info.Key }

// Info describes the blob: its key, size and commit time.
func (r *Reader) Info() Info { return r.info }

// LocalPath is a local file holding the blob's bytes (the blob itself in a
// file store, the cached copy in an S3 store), which may be hard-linked
// but never written. It may be removed once the Reader is closed.
func (r *Reader) LocalPath() string { return r.f.Name() }

// Close closes the Reader.
func (r *Reader) Close() error { return r.f.Close() }

var _ interface {
	io.ReadSeekCloser
	io.ReaderAt
} = (*Reader)(nil)

// Sentinel errors of the package.
var (
	// ErrInvalidKey marks a key that is not a clean relative path.
	ErrInvalidKey = errors.New("invalid blob key")
	// ErrConfig marks a store URL, endpoint or option that Open refuses
	// before it connects: a usage error.
	ErrConfig = errors.New("invalid blob store setting")
)

// TmpDir is the folder under the data dir that holds temp files.
const TmpDir = "tmp"

// ValidKey checks key: a clean, relative, slash-separated path, no "." or
// ".." element, no backslash, not under tmp/.
func ValidKey(key string) error {
	switch {
	case !fs.ValidPath(key) || key == ".":
		return fmt.Errorf("%w %q: not a clean relative path", ErrInvalidKey, key)
	case strings.Contains(key, `\`):
		return fmt.Errorf("%w %q: backslash", ErrInvalidKey, key)
	case key == TmpDir || strings.HasPrefix(key, TmpDir+"/"):
		return fmt.Errorf("%w %q: under %s/, which holds temp files", ErrInvalidKey, key, TmpDir)
	}
	return nil
}

// Key turns a path relative to the data dir, as rows hold it, into a key.
func Key(rel string) string { return filepath.ToSlash(filepath.Clean(rel)) }

// Options configures Open. DataDir is required; the rest apply to S3.
type Options struct {
	// DataDir is the director's data dir: temp files go under its tmp/,
	// the S3 cache under its blob-cache/, and file:// with no path is it.
	DataDir string
	// Endpoint is the S3 endpoint URL (https://host[:port]); when empty,
	// AWS_ENDPOINT_URL_S3, then AWS_ENDPOINT_URL, then Amazon S3.
	Endpoint string
	// Region is the bucket's region; when empty, AWS_REGION, then
	// AWS_DEFAULT_REGION, then whatever the endpoint answers.
	Region string
	// CacheSize caps the bytes of the S3 read cache
	// (DefaultCacheSize when 0).
	CacheSize int64
	// Insecure allows an http:// endpoint beyond loopback.
	Insecure bool
	// Getenv reads the environment (os.Getenv when nil); tests set it.
	Getenv func(string) string
}

// DefaultCacheSize caps the S3 read cache (--blob-cache-size).
const DefaultCacheSize = 10 << 30

// Open opens the store a URL names: "" or file:// for the data dir,
// file:///PATH for another folder, s3://bucket[/prefix] for a bucket.
func Open(ctx context.Context, rawURL string, o Options) (Store, error) {
	if o.DataDir == "" {
		return nil, errors.New("blob store: no data dir")
	}
	if o.Getenv == nil {
		o.Getenv = os.Getenv
	}
	if rawURL == "" {
		return NewFile(o.DataDir, o.DataDir)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("%w: blob store %q: %w", ErrConfig, rawURL, err)
	}
	switch u.Scheme {
	case "file":
		if u.Host != "" {
			return nil, fmt.Errorf("%w: blob store %q: a file URL names a local path (file:///abs/path), not host %q", ErrConfig, rawURL, u.Host)
		}
		root := u.Path
		if root == "" {
			root = o.DataDir
		}
		return NewFile(root, o.DataDir)
	case "s3":
		if u.Host == "" {
			return nil, fmt.Errorf("%w: blob store %q: no bucket (s3://bucket/prefix)", ErrConfig, rawURL)
		}
		if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
			return nil, fmt.Errorf("%w: blob store %q: credentials and options go in flags and the environment, not the URL", ErrConfig, rawURL)
		}
		prefix := strings.Trim(u.Path, "/")
		if prefix != "" && (!fs.ValidPath(prefix) || path.Clean(prefix) != prefix) {
			return nil, fmt.Errorf("%w: blob store %q: prefix %q is not a clean path", ErrConfig, rawURL, prefix)
		}
		return openS3(ctx, u.Host, prefix, o)
	default:
		return nil, fmt.Errorf("%w: blob store %q: scheme %q: want file:// or s3://", ErrConfig, rawURL, u.Scheme)
	}
}

// createTemp creates an empty temp file under dataDir/tmp.
func createTemp(dataDir, pattern string) (*os.File, error) {
	dir := filepath.Join(dataDir, TmpDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	return os.CreateTemp(dir, pattern) // CreateTemp uses mode 0600
}

// underPrefix reports whether key is in the folder prefix.
func underPrefix(key, prefix string) bool {
	return strings.HasPrefix(key, prefix+"/")
}
