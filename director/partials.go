package director

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/store/blob"
	"github.com/fedplane/fedplane/tensor"
)

// This file keeps partial uploads on disk across a restart (README
// "Transfers that resume"): the admin port's resumable submit_job uploads
// (partial.go) and envoys' task results (heldresults.go). Each is a file
// <kind>-<random>.part under the data dir's partials/, which start-up does
// not wipe (tmp/ it does), with a sidecar <kind>-<random>.json beside it
// that says whose it is and how many of its bytes count. The names are
// the director's own: nothing a peer sends is part of a path.
//
// The sidecar is written (temp file, fsync, rename, fsync of the folder)
// only after the part's bytes are fsynced, each time an attempt that was
// cut leaves it held, so its Held never counts a byte that a crash could
// lose. A part without a sidecar (a first attempt cut by a crash) is
// removed at start-up; a part longer than its sidecar says (a resumed
// attempt cut by a crash) is truncated to it. The digest needs no state of
// its own: the whole file is hashed once it holds every byte, held bytes
// included, as for any upload.

// partialsDir holds the partial uploads kept for a resume.
const partialsDir = "partials"

// Kinds of partial upload, the first word of their file names.
const (
	partialUpload  = "upload"
	partialResults = "results"
)

// maxSidecar bounds a sidecar read at start-up; they are a few hundred
// bytes.
const maxSidecar = 64 << 10

// sidecarVersion is the layout of partialMeta written; another is dropped.
const sidecarVersion = 1

// partialMeta is a partial upload's sidecar.
type partialMeta struct {
	Version int    `json:"version"`
	Kind    string `json:"kind"`
	ID      string `json:"id"` // the client's upload id
	// Owner is the identity that began the upload, the only one that may
	// resume it: the admin caller's session key, or the envoy's name.
	Owner string `json:"owner"`
	// Caller is the admin caller's key for the per-caller cap.
	Caller  string    `json:"caller,omitempty"`
	Size    int64     `json:"size"`   // the whole's, as announced
	SHA256  string    `json:"sha256"` // the whole's, as announced
	Held    int64     `json:"held"`   // bytes of the part that count
	Created time.Time `json:"created"`
	Last    time.Time `json:"last"` // last used, for the expiry
	// Task results only: the experiment, round and header checked on the
	// first attempt.
	Experiment string                    `json:"experiment,omitempty"`
	Round      int                       `json:"round,omitempty"`
	Header     *tensor.TaskResultsHeader `json:"header,omitempty"`
}

// check checks what start-up reads back, as the handlers check what
// clients send: a sidecar is the director's own, but a disk can be edited.
func (m *partialMeta) check(kind string, most int64) error {
	switch {
	case m.Version != sidecarVersion:
		return fmt.Errorf("version %d, want %d", m.Version, sidecarVersion)
	case m.Kind != kind:
		return fmt.Errorf("kind %q, want %q", m.Kind, kind)
	case !isHex(m.ID, 32):
		return fmt.Errorf("upload id %q: want 32 lowercase hex digits", m.ID)
	case !isHex(m.SHA256, 64):
		return fmt.Errorf("sha256 %q: want 64 lowercase hex digits", m.SHA256)
	case m.Owner == "":
		return errors.New("no owner")
	case m.Size <= 0 || m.Size > most:
		return fmt.Errorf("size %d: want 1 to %d", m.Size, most)
	case m.Held <= 0 || m.Held > m.Size:
		return fmt.Errorf("held %d: want 1 to the size, %d", m.Held, m.Size)
	case kind == partialResults && (m.Header == nil || m.Experiment == "" || m.Header.Sender != m.Owner):
		return errors.New("task results without their header, experiment or sender")
	}
	return nil
}

// createPart creates an empty part file (mode 0600) of kind under the
// data dir's partials/.
func (d *Director) createPart(kind string) (*os.File, error) {
	dir := filepath.Join(d.cfg.DataDir, partialsDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("partials dir: %w", err)
	}
	return os.CreateTemp(dir, kind+"-*.part")
}

// sidecarOf is the sidecar's path of the part at path.
func sidecarOf(path string) string { return strings.TrimSuffix(path, ".part") + ".json" }

// savePart makes f's first m.Held bytes and m durable: fsync f, then
// write the sidecar through a temp file, fsynced and renamed into place,
// and fsync the folder.
func savePart(f *os.File, m partialMeta) error {
	m.Version = sidecarVersion
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", f.Name(), err)
	}
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	dst := sidecarOf(f.Name())
	// One attempt at a time appends to a part, so its temp name is fixed.
	tmp, err := os.OpenFile(dst+".tmp", os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("sidecar: %w", err)
	}
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), dst)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("sidecar %s: %w", dst, err)
	}
	return blob.SyncDir(filepath.Dir(dst))
}

// forgetPart removes the sidecar of the part at path: the part no longer
// counts as held (it is complete, or dropped).
func forgetPart(path string) { os.Remove(sidecarOf(path)) }

// removePart closes f and removes it and its sidecar.
func removePart(f *os.File) {
	f.Close()
	forgetPart(f.Name())
	os.Remove(f.Name())
}

// heldPart is a part reloaded at start-up, open at its held bytes.
type heldPart struct {
	f    *os.File
	meta partialMeta
}

// loadParts reopens the parts of kind that the data dir's partials/
// holds, each truncated to the bytes its sidecar counts, and removes
// those without a valid sidecar, with a part shorter than it says, or
// not used within ttl of now. most bounds a part's size.
func loadParts(log *slog.Logger, dataDir, kind string, most int64, ttl time.Duration, now time.Time) []heldPart {
	dir := filepath.Join(dataDir, partialsDir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			log.Warn("partial uploads: cannot read their folder; none resumes", api.LogPath, dir, api.LogErr, err)
		}
		return nil
	}
	var held []heldPart
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, kind+"-") || !e.Type().IsRegular() {
			continue
		}
		path := filepath.Join(dir, name)
		switch {
		case strings.HasSuffix(name, ".json.tmp"):
			os.Remove(path) // a sidecar a crash cut while it was written
			continue
		case strings.HasSuffix(name, ".json"):
			if _, err := os.Stat(strings.TrimSuffix(path, ".json") + ".part"); errors.Is(err, fs.ErrNotExist) {
				os.Remove(path) // a crash between a part's removal and its sidecar's
			}
			continue
		case !strings.HasSuffix(name, ".part"):
			continue
		}
		m, f, err := openPart(path, kind, most)
		if err == nil && now.Sub(m.Last) >= ttl {
			err = fmt.Errorf("unused since %s, longer than %s", m.Last.Format(time.RFC3339), ttl)
		}
		if err != nil {
			if f != nil {
				f.Close()
			}
			if !errors.Is(err, fs.ErrNotExist) { // a first attempt's part has no sidecar: no news
				log.Info("partial upload dropped at start", api.LogPath, path, api.LogErr, err)
			}
			forgetPart(path)
			os.Remove(path)
			continue
		}
		held = append(held, heldPart{f: f, meta: m})
	}
	return held
}

// openPart reads the sidecar of the part at path and opens the part,
// truncated to the bytes it counts.
func openPart(path, kind string, most int64) (partialMeta, *os.File, error) {
	var m partialMeta
	sc, err := os.Open(sidecarOf(path))
	if err != nil {
		return m, nil, err
	}
	b, err := io.ReadAll(io.LimitReader(sc, maxSidecar+1))
	sc.Close()
	if err != nil {
		return m, nil, err
	}
	if len(b) > maxSidecar {
		return m, nil, fmt.Errorf("sidecar over %d bytes", maxSidecar)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, nil, fmt.Errorf("sidecar: %w", err)
	}
	if err := m.check(kind, most); err != nil {
		return m, nil, fmt.Errorf("sidecar: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return m, nil, err
	}
	st, err := f.Stat()
	if err != nil {
		return m, f, err
	}
	if st.Size() < m.Held {
		return m, f, fmt.Errorf("holds %d bytes, its sidecar counts %d", st.Size(), m.Held)
	}
	if st.Size() > m.Held {
		// A resumed attempt that a crash cut: its bytes were never counted.
		if err := f.Truncate(m.Held); err != nil {
			return m, f, err
		}
	}
	return m, f, nil
}
