package director

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/store/blob"
)

// Layout of the data dir and the blob store. Rows hold paths relative to
// the data dir, which are the blobs' keys (package store/blob).
const (
	tmpDir         = blob.TmpDir   // uploads and other files not yet committed
	experimentsDir = "experiments" // experiments/<id>/archive.zip, ...
	archiveFile    = "archive.zip"
)

// createTemp creates an empty file (mode 0600) under the data dir's tmp/,
// where start-up removes whatever a crash left behind.
func (d *Director) createTemp(pattern string) (*os.File, error) {
	return d.blobs.Create(pattern)
}

// commitFile makes tmp durable in the blob store under rel (relative to
// the data dir, as rows hold it): a file store fsyncs and renames it, an
// S3 store uploads it whole. Only after this returns may a row point at
// rel. tmp is closed either way.
func (d *Director) commitFile(ctx context.Context, tmp *os.File, rel string) error {
	// A commit that started completes even if its caller's request ends:
	// a half-done upload would leave nothing, but it would be wasted.
	return d.blobs.Commit(context.WithoutCancel(ctx), tmp, blob.Key(rel))
}

// openBlob opens the stored file rel; a missing one is fs.ErrNotExist.
func (d *Director) openBlob(ctx context.Context, rel string) (*blob.Reader, error) {
	return d.blobs.Open(ctx, blob.Key(rel))
}

// removeBlob removes the stored file rel, logging a failure: the next
// start removes a file no row names.
func (d *Director) removeBlob(ctx context.Context, rel string) {
	if err := d.blobs.Remove(context.WithoutCancel(ctx), blob.Key(rel)); err != nil {
		d.log.WarnContext(ctx, "removing a stored file failed", api.LogPath, rel, api.LogErr, err)
	}
}

// removeBlobs removes the stored files under the folder rel, logging a
// failure as removeBlob does.
func (d *Director) removeBlobs(ctx context.Context, rel string) {
	if err := d.blobs.RemovePrefix(context.WithoutCancel(ctx), blob.Key(rel)); err != nil {
		d.log.WarnContext(ctx, "removing stored files failed", api.LogPath, rel, api.LogErr, err)
	}
}

// orphanGrace is how old a blob no row names must be before start-up
// removes it from a shared store: younger, it may be one another director
// has committed and not yet recorded.
const orphanGrace = time.Hour

// reconcile makes the blob store and the database agree after a start, a
// crash included: it deletes temp files and every blob under experiments/
// that no row references (a crash between a commit and its row, or between
// a row's deletion and its blobs'; in a shared store only those older
// than orphanGrace), and fails each pending or running job one of whose
// blobs is missing, with that reason, rather than letting it crash later.
func (d *Director) reconcile(ctx context.Context) error {
	if err := os.RemoveAll(filepath.Join(d.cfg.DataDir, blob.TmpDir)); err != nil {
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
		if _, err := d.blobs.Stat(ctx, blob.Key(rel)); errors.Is(err, fs.ErrNotExist) {
			missing[r.ExperimentID] = rel
		} else if err != nil {
			return fmt.Errorf("check stored files: %w", err)
		}
	}
	shared := d.blobs.Shared()
	now := d.cfg.Now()
	err = d.blobs.List(ctx, experimentsDir, func(b blob.Info) error {
		rel := filepath.FromSlash(b.Key)
		if referenced[rel] || (shared && now.Sub(b.ModTime) < orphanGrace) {
			return nil
		}
		d.log.Warn("removing a file no row references", api.LogPath, rel)
		return d.blobs.Remove(ctx, b.Key)
	})
	if err != nil {
		return fmt.Errorf("remove orphan files: %w", err)
	}
	if f, ok := d.blobs.(*blob.File); ok {
		removeEmptyDirs(filepath.Join(f.Root(), experimentsDir))
	}
	if err := d.removeOrphanLogs(ctx); err != nil {
		return err
	}
	for id, rel := range missing {
		reason := fmt.Sprintf("stored file %s is missing from the blob store", rel)
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
