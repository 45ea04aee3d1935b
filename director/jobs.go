package director

import (
	"archive/zip"
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/basepb"
	"github.com/fedplane/fedplane/director/metrics"
	"github.com/fedplane/fedplane/job"
	"github.com/fedplane/fedplane/pki"
	"github.com/fedplane/fedplane/store"
	"github.com/fedplane/fedplane/tensor"
)

// Upload is a job archive received into a temp file, not yet stored.
// Discard it once done with it, stored or not.
type Upload struct {
	f      *os.File
	size   int64
	sha256 string
}

// Discard removes the temp file of an upload that was not stored; after a
// store it does nothing.
func (u *Upload) Discard() {
	if u.f != nil {
		u.f.Close()
		os.Remove(u.f.Name())
		u.f = nil
	}
}

// ReceiveArchive streams a job archive into a temp file, hashing it as it
// goes. copyFn writes the archive's bytes into the writer it is given; more
// than MaxJobSize bytes are refused with api.ErrTooLarge. On error nothing
// is left behind.
func (d *Director) ReceiveArchive(copyFn func(w io.Writer) (int64, error)) (*Upload, error) {
	tmp, err := d.createTemp("upload-*.zip")
	if err != nil {
		return nil, err
	}
	hw := job.NewHashWriter(tmp)
	n, err := copyFn(&capWriter{w: hw, left: d.cfg.MaxJobSize, what: "job archive larger than the director's cap"})
	hw.Close()
	d.metrics.Received(metrics.KindArchives, n)
	sum := hw.Sum()
	if err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, err
	}
	return &Upload{f: tmp, size: n, sha256: sum}, nil
}

// inspectUpload checks an uploaded archive without trusting it and returns
// its job.json. Problems of the job wrap job.ErrInvalid.
func (d *Director) inspectUpload(u *Upload) (*job.Info, error) {
	return job.Inspect(u.f, u.size, d.ArchiveLimits())
}

// ArchiveLimits are the limits a job archive is checked against, which
// the director also tells envoys that fetch it.
func (d *Director) ArchiveLimits() job.Limits {
	lim := job.DefaultLimits()
	lim.MaxUnpacked = d.cfg.MaxUnpackedSize
	return lim
}

// storeJob stores a validated job: the initial model and the archive are
// committed (fsync, rename) into the experiment's folder, then the row. It
// owns u and model: each is either stored or removed.
func (d *Director) storeJob(ctx context.Context, u *Upload, m *job.Manifest, model *os.File, modelSum string, who Caller, sig []byte, folder string) (store.Experiment, error) {
	defer u.Discard()
	manifest, err := json.Marshal(m)
	if err != nil {
		model.Close()
		os.Remove(model.Name())
		return store.Experiment{}, fmt.Errorf("encode job.json: %w", err)
	}
	id := uuid.NewString()
	dir := filepath.Join(experimentsDir, id)
	modelRel := filepath.Join(experimentsDir, id, "models", "round-0000.safetensors")
	if err := d.commitFile(ctx, model, modelRel); err != nil {
		os.Remove(model.Name())
		d.removeBlobs(ctx, dir)
		return store.Experiment{}, fmt.Errorf("store the model: %w", err)
	}
	rel := filepath.Join(experimentsDir, id, archiveFile)
	name := u.f.Name()
	err = d.commitFile(ctx, u.f, rel)
	u.f = nil
	os.Remove(name) // a no-op once renamed; an S3 store has uploaded it
	if err != nil {
		d.removeBlobs(ctx, dir)
		return store.Experiment{}, fmt.Errorf("store the archive: %w", err)
	}
	e, err := d.db.CreateExperiment(ctx, store.Experiment{
		ID: id, Name: m.Name, Manifest: string(manifest),
		Submitter: who.Name, SubmitterOrg: who.Org, SubmitterRole: who.Role,
		ArchivePath: rel, ArchiveSHA256: u.sha256, ArchiveSize: u.size, Signature: sig, FolderName: folder,
	}, store.Round{Round: 0, ModelPath: modelRel, ModelSHA256: modelSum})
	if err != nil {
		d.removeBlobs(ctx, dir)
		return store.Experiment{}, err
	}
	d.log.InfoContext(ctx, "job submitted", api.LogJob, id, api.LogJobName, e.Name, api.LogBytes, u.size, api.LogCaller, e.Submitter)
	d.emit(api.Event{Kind: api.EventJobSubmitted, Job: id, JobName: e.Name,
		Message: fmt.Sprintf("by %s, %d rounds", e.Submitter, m.Rounds)})
	// Only now: a scheduler that starts the job at once must not record
	// job.started before job.submitted.
	d.kickScheduler()
	return e, nil
}

// Submission is what a submitter sends besides the archive. The admin
// channel sends nothing else: job.json says it all. An OpenFL frontend
// names the experiment and its collaborators, which replace job.json's
// name and envoys, and may send the initial model as a ModelProto.
type Submission struct {
	Name   string
	Envoys []string
	Model  *basepb.ModelProto
	// Frontend marks an OpenFL frontend's submission: its name must be new
	// and it must name its collaborators.
	Frontend bool
	// Signature is the submitter's signature of the archive, if it sent
	// one. The adapter has checked its certificate; SubmitJob checks that it
	// signs this archive and stores it for the envoys, which check it again
	// against their own CA.
	Signature *pki.JobSignature
	// FolderName is the job folder's name a FLARE admin client gives
	// (submit_job <folder>), kept with the job; "" for none.
	FolderName string
	// NoWait refuses a job that cannot start with the envoys registered
	// now (more min_envoys than there are), rather than keep it waiting.
	NoWait bool
}

// JobCannotStart is CannotStart for a stored job.
func (d *Director) JobCannotStart(e store.Experiment) string {
	m, err := manifestOf(e)
	if err != nil {
		return ""
	}
	return d.CannotStart(m)
}

// CannotStart says why job.json m cannot start with the envoys registered
// now, or returns "": it asks for more envoys than have registered. Named
// envoys that never registered are refused at submit already.
func (d *Director) CannotStart(m *job.Manifest) string {
	if len(m.Envoys) > 0 || m.MinEnvoys == 0 {
		return ""
	}
	if total, _, _ := d.reg.count(); total < m.MinEnvoys {
		noun := "envoys"
		if m.MinEnvoys == 1 {
			noun = "envoy"
		}
		return fmt.Sprintf("it asks for %d %s (min_envoys) and only %d have registered: it waits until more do", m.MinEnvoys, noun, total)
	}
	return ""
}

// SubmitJob checks an uploaded job without trusting it (job.json, the
// envoys it names, the initial model) and stores it as a pending job. It
// owns u. A bad job is refused with an error wrapping job.ErrInvalid or
// api.ErrInvalid that names the problem.
func (d *Director) SubmitJob(ctx context.Context, who Caller, u *Upload, sub Submission) (store.Experiment, error) {
	defer u.Discard()
	if sub.Frontend {
		if err := api.ValidateName("experiment name", sub.Name); err != nil {
			return store.Experiment{}, err
		}
		if len(sub.Envoys) == 0 {
			return store.Experiment{}, fmt.Errorf("%w: collaborator_names is empty", api.ErrInvalid)
		}
		if why := d.unknownEnvoys(sub.Envoys); why != "" {
			return store.Experiment{}, fmt.Errorf("%w: collaborator_names: %s", api.ErrInvalid, why)
		}
		same, err := d.db.ListExperiments(ctx, store.ExperimentFilter{Name: sub.Name, Max: 1})
		if err != nil {
			return store.Experiment{}, err
		}
		if len(same) > 0 {
			return store.Experiment{}, fmt.Errorf("%w: an experiment named %q exists (%s)", api.ErrAlreadyExists, sub.Name, same[0].ID)
		}
	}
	if sub.Signature != nil && sub.Signature.SHA256 != u.sha256 {
		return store.Experiment{}, fmt.Errorf("%w: the job's signature is for archive sha256 %s, but the archive received has %s: did a file of the job change while it was sent?",
			api.ErrInvalidJob, sub.Signature.SHA256, u.sha256)
	}
	info, err := d.inspectUpload(u)
	if err != nil {
		return store.Experiment{}, err
	}
	m := info.Manifest
	if m.OpenFL != nil && !sub.Frontend {
		return store.Experiment{}, fmt.Errorf("%w: the archive is an OpenFL workspace (%s, no %s): submit it with OpenFL's frontend (SetNewExperiment), whose collaborators run its tasks",
			job.ErrInvalid, job.PlanFile, job.ManifestFile)
	}
	if sub.Frontend {
		m.Name, m.Envoys, m.MinEnvoys = sub.Name, slices.Clone(sub.Envoys), 0
		if err := m.Validate(); err != nil {
			return store.Experiment{}, err
		}
	} else if why := d.unknownEnvoys(m.Envoys); why != "" {
		return store.Experiment{}, fmt.Errorf("%w: job.json: \"envoys\" %s", job.ErrInvalid, why)
	} else if why := d.CannotStart(m); why != "" && sub.NoWait {
		return store.Experiment{}, fmt.Errorf("%w: the job cannot start now: %s (submitted with --wait-for-envoys=false)", job.ErrInvalid, why)
	}
	var model *os.File
	var modelSum string
	if sub.Model != nil {
		model, modelSum, err = d.writeModelProto(sub.Model)
	} else {
		model, modelSum, err = d.extractModel(u.f, u.size, info.Root)
	}
	if err != nil {
		return store.Experiment{}, err
	}
	var sig []byte
	if sub.Signature != nil {
		sig = sub.Signature.Marshal()
	}
	return d.storeJob(ctx, u, m, model, modelSum, who, sig, sub.FolderName)
}

// unknownEnvoys explains why a job naming envoys that never registered is
// refused, or returns "".
func (d *Director) unknownEnvoys(names []string) string {
	if len(names) == 0 {
		return ""
	}
	known := map[string]bool{}
	for _, v := range d.reg.list() {
		known[v.Name] = true
	}
	var missing []string
	for _, name := range names {
		if !known[name] {
			missing = append(missing, strconv.Quote(name))
		}
	}
	if len(missing) == 0 {
		return ""
	}
	return fmt.Sprintf("names %s, which never registered with this director", strings.Join(missing, ", "))
}

// extractModel copies the job's model.safetensors out of the archive into a
// temp file and checks it: a valid safetensors file of float32 tensors. It
// returns the open temp file and its sha256.
func (d *Director) extractModel(archive *os.File, size int64, root string) (*os.File, string, error) {
	zr, err := zip.NewReader(archive, size)
	if err != nil {
		return nil, "", fmt.Errorf("%w: job archive: %w", job.ErrInvalid, err)
	}
	var entry *zip.File
	for _, f := range zr.File {
		if f.Name == root+job.ModelFile {
			entry = f
		}
	}
	if entry == nil {
		return nil, "", fmt.Errorf("%w: job archive: no %s next to job.json: the job needs its initial model", job.ErrInvalid, job.ModelFile)
	}
	rc, err := entry.Open()
	if err != nil {
		return nil, "", fmt.Errorf("%w: job archive: %s: %w", job.ErrInvalid, job.ModelFile, err)
	}
	defer rc.Close()
	tmp, err := d.createTemp("model-*.safetensors")
	if err != nil {
		return nil, "", err
	}
	fail := func(err error) (*os.File, string, error) {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, "", err
	}
	hw := job.NewHashWriter(tmp)
	n, err := io.Copy(hw, io.LimitReader(rc, int64(entry.UncompressedSize64)+1))
	hw.Close()
	sum := hw.Sum()
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return fail(err)
		}
		return fail(fmt.Errorf("%w: job archive: %s: %w", job.ErrInvalid, job.ModelFile, err))
	}
	x, _, err := tensor.ReadSafetensors(tmp, n)
	if err != nil {
		return fail(fmt.Errorf("%w: %s: %w", job.ErrInvalid, job.ModelFile, err))
	}
	if len(x.Tensors) == 0 {
		return fail(fmt.Errorf("%w: %s holds no tensors", job.ErrInvalid, job.ModelFile))
	}
	for _, t := range x.Tensors {
		if t.DType != "F32" {
			return fail(fmt.Errorf("%w: %s: tensor %q is %s; fedplane averages float32 (F32) tensors", job.ErrInvalid, job.ModelFile, t.Name, t.DType))
		}
	}
	return tmp, sum, nil
}

// writeModelProto writes a frontend's initial model as safetensors into a
// temp file, after checking each tensor's encoding.
func (d *Director) writeModelProto(mp *basepb.ModelProto) (*os.File, string, error) {
	var specs []tensor.Span
	data := map[string][]byte{}
	for _, nt := range mp.GetTensors() {
		span, err := tensor.FromNamedTensor(nt)
		if err != nil {
			return nil, "", fmt.Errorf("%w: model_proto: %w", api.ErrInvalid, err)
		}
		if _, dup := data[span.Name]; dup {
			return nil, "", fmt.Errorf("%w: model_proto: tensor %q appears twice", api.ErrInvalid, span.Name)
		}
		specs = append(specs, span)
		data[span.Name] = nt.GetDataBytes()
	}
	slices.SortFunc(specs, func(a, b tensor.Span) int { return strings.Compare(a.Name, b.Name) })
	tmp, err := d.createTemp("model-*.safetensors")
	if err != nil {
		return nil, "", err
	}
	hw := job.NewHashWriter(tmp)
	bw := bufio.NewWriter(hw)
	w, err := tensor.NewSafetensorsWriter(bw, specs, nil)
	if err == nil {
		for _, s := range specs {
			if _, err = w.Write(data[s.Name]); err != nil {
				break
			}
		}
	}
	if err == nil {
		err = w.Close()
	}
	if err == nil {
		err = bw.Flush()
	}
	hw.Close()
	sum := hw.Sum()
	if err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, "", fmt.Errorf("%w: model_proto: %w", api.ErrInvalid, err)
	}
	return tmp, sum, nil
}
