package director

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/google/uuid"

	"github.com/fedplane/fedplane/job"
	"github.com/fedplane/fedplane/store"
)

// upload is a job archive received into a temp file, not yet stored.
type upload struct {
	f      *os.File
	size   int64
	sha256 string
}

// discard removes the temp file of an upload that will not be stored.
func (u *upload) discard() {
	if u.f != nil {
		u.f.Close()
		os.Remove(u.f.Name())
		u.f = nil
	}
}

// receiveArchive streams an archive into a temp file, hashing it as it goes.
// copyFn writes the archive's bytes into the writer it is given. On error
// nothing is left behind.
func (d *Director) receiveArchive(copyFn func(w io.Writer) (int64, error)) (*upload, error) {
	tmp, err := d.createTemp("upload-*.zip")
	if err != nil {
		return nil, err
	}
	hw := job.NewHashWriter(tmp)
	n, err := copyFn(hw)
	hw.Close()
	sum := hw.Sum()
	if err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, err
	}
	return &upload{f: tmp, size: n, sha256: sum}, nil
}

// inspectUpload checks an uploaded archive without trusting it and returns
// its job.json. Problems of the job wrap job.ErrInvalid.
func (d *Director) inspectUpload(u *upload) (*job.Info, error) {
	lim := job.DefaultLimits()
	lim.MaxUnpacked = d.cfg.MaxUnpackedSize
	return job.Inspect(u.f, u.size, lim)
}

// storeJob stores a validated job: the initial model and the archive are
// committed (fsync, rename) into the experiment's folder, then the row. It
// owns u and model: each is either stored or removed.
func (d *Director) storeJob(ctx context.Context, u *upload, m *job.Manifest, model *os.File, modelSum string, who caller) (store.Experiment, error) {
	defer u.discard()
	manifest, err := json.Marshal(m)
	if err != nil {
		model.Close()
		os.Remove(model.Name())
		return store.Experiment{}, fmt.Errorf("encode job.json: %w", err)
	}
	id := uuid.NewString()
	dir := filepath.Join(d.cfg.DataDir, experimentsDir, id)
	modelRel := filepath.Join(experimentsDir, id, "models", "round-0000.safetensors")
	if err := d.commitFile(model, modelRel); err != nil {
		os.Remove(model.Name())
		os.RemoveAll(dir)
		return store.Experiment{}, fmt.Errorf("store the model: %w", err)
	}
	rel := filepath.Join(experimentsDir, id, archiveFile)
	if err := d.commitFile(u.f, rel); err != nil {
		os.RemoveAll(dir)
		return store.Experiment{}, fmt.Errorf("store the archive: %w", err)
	}
	u.f = nil
	e, err := d.db.CreateExperiment(ctx, store.Experiment{
		ID: id, Name: m.Name, Manifest: string(manifest),
		Submitter: who.Name, SubmitterOrg: who.Org, SubmitterRole: who.Role,
		ArchivePath: rel, ArchiveSHA256: u.sha256, ArchiveSize: u.size,
	}, store.Round{Round: 0, ModelPath: modelRel, ModelSHA256: modelSum})
	if err != nil {
		os.RemoveAll(dir)
		return store.Experiment{}, err
	}
	d.kickScheduler()
	d.log.InfoContext(ctx, "job submitted", keyJob, id, "name", e.Name, "bytes", u.size, "submitter", e.Submitter)
	return e, nil
}
