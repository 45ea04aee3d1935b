package admin

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/fedplane/fedplane/adminproto"
	"github.com/fedplane/fedplane/api"
)

// This file is FLARE 2.6's two-step download. download_job lays out the
// job's results in a folder of their own (director.ResultsBundle), keeps it
// as a transaction and answers with its files; the client then fetches
// each with download_job_file, one connection per file, and says "end" on
// the last, which ends the transaction. A transaction that is not ended
// expires. Files are served only from the transaction's folder, only by
// the names listed, and only to the caller that opened it.

// Defaults of the download transactions.
const (
	// DefaultDownloadTTL ends a transaction unused this long.
	DefaultDownloadTTL = 10 * time.Minute
	// DefaultDownloadsPerCaller caps one caller's open transactions.
	DefaultDownloadsPerCaller = 4
	// DefaultMaxDownloads caps all open transactions.
	DefaultMaxDownloads = 64
)

// txIDBytes is the size of a transaction id's random part; an id is its
// lowercase hex.
const txIDBytes = 16

// endWord, as download_job_file's last argument, ends the transaction.
const endWord = "end"

// downloads is the table of open download transactions, by id.
type downloads struct {
	now       func() time.Time
	ttl       time.Duration
	perCaller int
	max       int

	mu   sync.Mutex
	byID map[string]*download
}

// download is one transaction: a results folder the director built and
// the files in it.
type download struct {
	caller string // sessionKey of who opened it
	folder string // download_job's argument, which the client echoes
	job    string // the job's id
	dir    string
	files  []string // relative, slash-separated, sorted
	last   time.Time
}

func newDownloads(now func() time.Time) *downloads {
	return &downloads{now: now, ttl: DefaultDownloadTTL, perCaller: DefaultDownloadsPerCaller,
		max: DefaultMaxDownloads, byID: map[string]*download{}}
}

// open keeps dir as a transaction of caller and returns its id; on error
// it removes dir.
func (t *downloads) open(caller, job, folder, dir string, files []string) (string, error) {
	var b [txIDBytes]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	id := hex.EncodeToString(b[:])
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expireLocked()
	mine := 0
	for _, d := range t.byID {
		if d.caller == caller {
			mine++
		}
	}
	var err error
	switch {
	case mine >= t.perCaller:
		err = fmt.Errorf("%w: %d downloads of yours are open; finish one or wait %s for it to expire", api.ErrBusy, mine, t.ttl)
	case len(t.byID) >= t.max:
		err = fmt.Errorf("%w: director has %d downloads open; try again later", api.ErrBusy, len(t.byID))
	}
	if err != nil {
		os.RemoveAll(dir)
		return "", err
	}
	t.byID[id] = &download{caller: caller, job: job, folder: folder, dir: dir, files: files, last: t.now()}
	return id, nil
}

// get returns caller's transaction id for folder, and marks it used.
func (t *downloads) get(id, caller, folder string) (download, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expireLocked()
	d, ok := t.byID[id]
	if !ok || d.caller != caller {
		return download{}, fmt.Errorf("%w: no download %s of yours is open (it ended, or expired after %s unused); run download_job again", api.ErrNotFound, id, t.ttl)
	}
	if d.folder != folder {
		return download{}, fmt.Errorf("%w: download %s is of %q, not %q", api.ErrInvalid, id, d.folder, folder)
	}
	d.last = t.now()
	return *d, nil
}

// end ends transaction id and removes its folder.
func (t *downloads) end(id string) {
	t.mu.Lock()
	d, ok := t.byID[id]
	delete(t.byID, id)
	t.mu.Unlock()
	if ok {
		os.RemoveAll(d.dir)
	}
}

// sweep ends the transactions unused for the TTL, so that their folders do
// not wait for the next download to go.
func (t *downloads) sweep() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expireLocked()
}

// endJob ends every transaction of job, when the job is deleted: its
// results are gone for everyone.
func (t *downloads) endJob(job string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id, d := range t.byID {
		if d.job == job {
			os.RemoveAll(d.dir)
			delete(t.byID, id)
		}
	}
}

// closeAll ends every transaction, when the server stops.
func (t *downloads) closeAll() {
	t.mu.Lock()
	defer t.mu.Unlock()
	for id, d := range t.byID {
		os.RemoveAll(d.dir)
		delete(t.byID, id)
	}
}

func (t *downloads) expireLocked() {
	now := t.now()
	for id, d := range t.byID {
		if now.Sub(d.last) >= t.ttl {
			os.RemoveAll(d.dir)
			delete(t.byID, id)
		}
	}
}

// fileArgs are download_job_file's arguments.
type fileArgs struct {
	txID, folder, file string
	end                bool
}

// parseFileArgs checks download_job_file's arguments: a transaction id as
// open makes them, the folder download_job named, a file name (checked
// against the transaction's list later) and, on the last file, "end".
func parseFileArgs(args []string) (fileArgs, error) {
	if len(args) != 3 && len(args) != 4 {
		return fileArgs{}, fmt.Errorf("%d arguments, want 3 or 4", len(args))
	}
	a := fileArgs{txID: args[0], folder: args[1], file: args[2]}
	if len(args) == 4 {
		if args[3] != endWord {
			return fileArgs{}, fmt.Errorf("last argument %q: want %q or nothing", args[3], endWord)
		}
		a.end = true
	}
	if len(a.txID) != 2*txIDBytes {
		return fileArgs{}, fmt.Errorf("tx_id %q: want %d hex digits", a.txID, 2*txIDBytes)
	}
	for i := range len(a.txID) {
		if c := a.txID[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return fileArgs{}, fmt.Errorf("tx_id %q: want lowercase hex digits", a.txID)
		}
	}
	if !fs.ValidPath(a.file) || a.file == "." {
		return fileArgs{}, fmt.Errorf("file %q is not a relative path inside the download", a.file)
	}
	return a, nil
}

// downloadJob is FLARE's first step: it lays out job's results and answers
// with the files to fetch and the transaction that holds them.
func (s *Server) downloadJob(ctx context.Context, req *request) (*adminproto.Message, error) {
	e, dir, release, err := s.resultsBundle(ctx, req)
	if err != nil {
		return nil, err
	}
	defer release()
	files, err := listFiles(dir)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	folder := req.args[0]
	tx, err := s.downloads.open(s.sessionKey(req), e.ID, folder, dir, files)
	if err != nil {
		return nil, err
	}
	meta := map[string]any{
		"info": "", api.MetaJobID: e.ID, api.MetaFiles: files, api.MetaTxID: tx,
		api.MetaFolderName: folder, api.MetaCmdName: api.CmdDownloadJobFile,
	}
	return replyOK(meta, adminproto.Item{Type: adminproto.TypeString, Data: loginOK}), nil
}

// listFiles lists the regular files under dir, relative and slash-separated,
// sorted.
func listFiles(dir string) ([]string, error) {
	var files []string
	err := filepath.WalkDir(dir, func(p string, de fs.DirEntry, err error) error {
		if err != nil || !de.Type().IsRegular() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		files = append(files, filepath.ToSlash(rel))
		return err
	})
	slices.Sort(files)
	return files, err
}

// downloadJobFile is FLARE's second step: one file of a transaction as a
// binary reply (meta empty, as FLARE's server sends it); "end" ends the
// transaction once the file is sent.
func (s *Server) downloadJobFile(ctx context.Context, req *request) (*adminproto.Message, error) {
	a, err := parseFileArgs(req.args)
	if err != nil {
		return nil, s.usage(req.name, err.Error())
	}
	d, err := s.downloads.get(a.txID, s.sessionKey(req), a.folder)
	if err != nil {
		return nil, err
	}
	if a.end {
		defer s.downloads.end(a.txID)
	}
	if _, ok := slices.BinarySearch(d.files, a.file); !ok {
		return nil, fmt.Errorf("%w: download %s has no file %q; its files: %q", api.ErrInvalid, a.txID, a.file, d.files)
	}
	release, err := s.d.EnterDownload(s.callerKey(req))
	if err != nil {
		return nil, err
	}
	defer release()
	// The name is one of the folder's own, and os.Root keeps the open
	// inside the folder all the same.
	root, err := os.OpenRoot(d.dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	f, err := root.Open(a.file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: %q is not a file", api.ErrInvalid, a.file)
	}
	bw := bufio.NewWriterSize(req.w, 256<<10)
	err = adminproto.WriteBinary(bw, nil, uint64(st.Size()), f)
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		s.log.WarnContext(ctx, "download not delivered", api.LogJob, d.folder, api.LogErr, err)
	}
	return nil, nil
}
