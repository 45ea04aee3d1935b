package director

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Layout of the data dir. Rows hold paths relative to it.
const (
	tmpDir         = "tmp"         // uploads and other files not yet committed
	experimentsDir = "experiments" // experiments/<id>/archive.zip, ...
	archiveFile    = "archive.zip"
)

// createTemp creates an empty file (mode 0600) under the data dir's tmp/,
// where start-up removes whatever a crash left behind.
func (d *Director) createTemp(pattern string) (*os.File, error) {
	dir := filepath.Join(d.cfg.DataDir, tmpDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("temp dir: %w", err)
	}
	return os.CreateTemp(dir, pattern) // CreateTemp uses mode 0600
}

// commitFile makes tmp durable under rel (relative to the data dir): fsync the
// file, rename it into place, fsync the directory. Only after this returns may
// a row point at rel. tmp is closed either way.
func (d *Director) commitFile(tmp *os.File, rel string) error {
	dst := filepath.Join(d.cfg.DataDir, rel)
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("fsync %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("close %s: %w", tmp.Name(), err)
	}
	dir := filepath.Dir(dst)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("rename into %s: %w", dst, err)
	}
	return syncDir(dir)
}

// syncDir fsyncs a directory so a rename in it survives a crash.
func syncDir(dir string) error {
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

// removeOrphans deletes what a crash can leave behind: files under tmp/, and
// experiment directories that no row references (a crash between the rename
// and the commit of the row, or between a row's deletion and its files').
func (d *Director) removeOrphans(ctx context.Context) error {
	if err := os.RemoveAll(filepath.Join(d.cfg.DataDir, tmpDir)); err != nil {
		return fmt.Errorf("remove temp files: %w", err)
	}
	known, err := d.db.ExperimentFiles(ctx)
	if err != nil {
		return err
	}
	referenced := map[string]bool{}
	for p := range known {
		referenced[filepath.Dir(filepath.Clean(p))] = true
	}
	entries, err := os.ReadDir(filepath.Join(d.cfg.DataDir, experimentsDir))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list experiments dir: %w", err)
	}
	for _, e := range entries {
		rel := filepath.Join(experimentsDir, e.Name())
		if referenced[rel] {
			continue
		}
		d.log.Warn("removing files no experiment references", "path", rel)
		if err := os.RemoveAll(filepath.Join(d.cfg.DataDir, rel)); err != nil {
			return fmt.Errorf("remove orphan %s: %w", rel, err)
		}
	}
	return nil
}
