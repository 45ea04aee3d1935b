package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// File keeps blobs as files under a root folder, by default the data dir
// itself: the layout the director always had.
type File struct {
	root    string
	dataDir string
}

// NewFile returns a store of files under root, with temp files under
// dataDir's tmp/. When root is not dataDir (which may be another file
// system), Commit copies a temp file next to its destination first.
func NewFile(root, dataDir string) (*File, error) {
	if root == "" || dataDir == "" {
		return nil, errors.New("file blob store: empty root or data dir")
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("file blob store: %w", err)
	}
	return &File{root: filepath.Clean(root), dataDir: filepath.Clean(dataDir)}, nil
}

// Root is the folder the store keeps blobs in.
func (s *File) Root() string { return s.root }

// Shared is false: one director owns a file store.
func (s *File) Shared() bool { return false }

// Create creates a temp file under the data dir's tmp/.
func (s *File) Create(pattern string) (*os.File, error) { return createTemp(s.dataDir, pattern) }

// path is the file of key, which must be valid.
func (s *File) path(key string) string { return filepath.Join(s.root, filepath.FromSlash(key)) }

// Commit fsyncs tmp, renames it into place and fsyncs the folder, and the
// parents of each folder it made, so that the blob survives a crash.
func (s *File) Commit(_ context.Context, tmp *os.File, key string) error {
	if err := ValidKey(key); err != nil {
		tmp.Close()
		return err
	}
	dst := s.path(key)
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("fsync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp.Name(), err)
	}
	dir := filepath.Dir(dst)
	created, err := mkdirs(dir)
	if err != nil {
		return err
	}
	src := tmp.Name()
	if s.root != s.dataDir {
		// Another file system, maybe: a rename would fail across it.
		if src, err = copyInto(dir, src); err != nil {
			return err
		}
		defer os.Remove(src) // a no-op once renamed
		os.Remove(tmp.Name())
	}
	if err := os.Rename(src, dst); err != nil {
		return fmt.Errorf("rename into %s: %w", dst, err)
	}
	if err := SyncDir(dir); err != nil {
		return err
	}
	// Folders made for this file must survive a crash too: fsync each
	// one's parent.
	for _, c := range created {
		if err := SyncDir(filepath.Dir(c)); err != nil {
			return err
		}
	}
	return nil
}

// copyInto copies file src to a fsynced temp file in dir and returns its
// name.
func copyInto(dir, src string) (string, error) {
	in, err := os.Open(src)
	if err != nil {
		return "", err
	}
	defer in.Close()
	out, err := os.CreateTemp(dir, ".commit-*")
	if err != nil {
		return "", err
	}
	_, err = io.Copy(out, in)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(out.Name())
		return "", fmt.Errorf("copy %s into %s: %w", src, dir, err)
	}
	return out.Name(), nil
}

// Open opens the file of key.
func (s *File) Open(_ context.Context, key string) (*Reader, error) {
	if err := ValidKey(key); err != nil {
		return nil, err
	}
	f, err := os.Open(s.path(key))
	if err != nil {
		return nil, err
	}
	return newReader(f, key, time.Time{})
}

// Stat describes the file of key.
func (s *File) Stat(_ context.Context, key string) (Info, error) {
	if err := ValidKey(key); err != nil {
		return Info{}, err
	}
	fi, err := os.Stat(s.path(key))
	if err != nil {
		return Info{}, err
	}
	if fi.IsDir() {
		return Info{}, fmt.Errorf("blob %s: %w (a folder)", key, fs.ErrNotExist)
	}
	return Info{Key: key, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// Remove removes the file of key. Empty folders stay; the director's
// start-up removes them.
func (s *File) Remove(_ context.Context, key string) error {
	if err := ValidKey(key); err != nil {
		return err
	}
	if err := os.Remove(s.path(key)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// RemovePrefix removes the folder prefix and everything in it.
func (s *File) RemovePrefix(_ context.Context, prefix string) error {
	if err := ValidKey(prefix); err != nil {
		return err
	}
	return os.RemoveAll(s.path(prefix))
}

// List walks the folder prefix.
func (s *File) List(_ context.Context, prefix string, fn func(Info) error) error {
	if err := ValidKey(prefix); err != nil {
		return err
	}
	root := s.path(prefix)
	return filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) {
			if p == root {
				return filepath.SkipAll
			}
			return nil // removed meanwhile
		}
		if err != nil || e.IsDir() {
			return err
		}
		fi, err := e.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(s.root, p)
		if err != nil {
			return err
		}
		return fn(Info{Key: filepath.ToSlash(rel), Size: fi.Size(), ModTime: fi.ModTime()})
	})
}

// mkdirs makes dir and its missing parents (mode 0700) and returns the ones
// it made, deepest last.
func mkdirs(dir string) ([]string, error) {
	var missing []string
	for p := dir; ; p = filepath.Dir(p) {
		if _, err := os.Stat(p); err == nil {
			break
		}
		missing = append([]string{p}, missing...)
		if filepath.Dir(p) == p {
			break
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	return missing, nil
}

// SyncDir fsyncs a directory so a rename in it survives a crash.
func SyncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}
