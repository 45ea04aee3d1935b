package director

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/fedplane/fedplane/api"
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
	created, err := d.mkdirs(dir)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), dst); err != nil {
		return fmt.Errorf("rename into %s: %w", dst, err)
	}
	if err := syncDir(dir); err != nil {
		return err
	}
	// Folders made for this file must survive a crash too: fsync each
	// one's parent.
	for _, c := range created {
		if err := syncDir(filepath.Dir(c)); err != nil {
			return err
		}
	}
	return nil
}

// mkdirs makes dir and its missing parents (mode 0700) and returns the ones
// it made, deepest last.
func (d *Director) mkdirs(dir string) ([]string, error) {
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

// reconcile makes the data dir and the database agree after a start, a
// crash included: it deletes temp files and every file under experiments/
// that no row references (a crash between a rename and its row, or between
// a row's deletion and its files'), and fails each pending or running job
// one of whose files is missing, with that reason, rather than letting it
// crash later.
func (d *Director) reconcile(ctx context.Context) error {
	if err := os.RemoveAll(filepath.Join(d.cfg.DataDir, tmpDir)); err != nil {
		return fmt.Errorf("remove temp files: %w", err)
	}
	refs, err := d.db.ReferencedFiles(ctx)
	if err != nil {
		return err
	}
	referenced := map[string]bool{}
	missing := map[string]string{} // live experiment -> its first missing file
	for _, r := range refs {
		rel := filepath.Clean(r.Path)
		referenced[rel] = true
		if r.Status.Terminal() || missing[r.ExperimentID] != "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(d.cfg.DataDir, rel)); errors.Is(err, fs.ErrNotExist) {
			missing[r.ExperimentID] = rel
		}
	}
	root := filepath.Join(d.cfg.DataDir, experimentsDir)
	err = filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrNotExist) && path == root {
			return filepath.SkipAll
		}
		if err != nil || e.IsDir() {
			return err
		}
		rel, err := filepath.Rel(d.cfg.DataDir, path)
		if err != nil {
			return err
		}
		if !referenced[rel] {
			d.log.Warn("removing a file no row references", api.LogPath, rel)
			return os.Remove(path)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("remove orphan files: %w", err)
	}
	removeEmptyDirs(root)
	if err := d.removeOrphanLogs(ctx); err != nil {
		return err
	}
	for id, rel := range missing {
		reason := fmt.Sprintf("stored file %s is missing from the data dir", rel)
		d.log.Error("failing a job whose file is missing", api.LogJob, id, api.LogPath, rel)
		ended, err := d.db.EndExperiment(ctx, id, api.JobFailed, reason)
		if err != nil && !errors.Is(err, api.ErrConflict) {
			return err
		}
		if err == nil {
			d.emitEnded(ended)
		}
	}
	return nil
}

// removeEmptyDirs removes the empty folders under root, deepest first.
func removeEmptyDirs(root string) {
	var dirs []string
	filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err == nil && e.IsDir() && path != root {
			dirs = append(dirs, path)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		os.Remove(dirs[i]) // fails, harmlessly, unless empty
	}
}
