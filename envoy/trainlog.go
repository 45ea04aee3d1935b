package envoy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
)

// An experiment's training log, <work-dir>/<id>/logs/train.log: what its
// training command wrote to stdout and stderr, round after round. It is
// bounded: once it reaches maxTrainLog bytes it becomes train.log.1
// (replacing the one before) and a new train.log begins, so an experiment
// keeps at most about twice maxTrainLog bytes, and always at least its
// last maxTrainLog.
const (
	trainLogName = "train.log"
	oldLogSuffix = ".1"
	maxTrainLog  = 8 << 20
)

// trainLog appends to a training log, rotating it at max bytes. Writes
// from the command's stdout and stderr come from two goroutines; each
// lands whole.
type trainLog struct {
	mu   sync.Mutex
	path string
	max  int64
	f    *os.File
	size int64
}

// openTrainLog opens the log at path for appending.
func openTrainLog(path string, max int64) (*trainLog, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("training log: %w", err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("training log: %w", err)
	}
	return &trainLog{path: path, max: max, f: f, size: fi.Size()}, nil
}

// Write appends p, first moving a log that p would take past max aside.
// A log that cannot be rotated goes on growing: the output is kept rather
// than lost.
func (l *trainLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.size > 0 && l.size+int64(len(p)) > l.max {
		if err := l.rotate(); err == nil {
			l.size = 0
		}
	}
	n, err := l.f.Write(p)
	l.size += int64(n)
	return n, err
}

func (l *trainLog) rotate() error {
	if err := os.Rename(l.path, l.path+oldLogSuffix); err != nil {
		return err
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	l.f.Close()
	l.f = f
	return nil
}

// Close closes the log.
func (l *trainLog) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}

// readLogTail returns the last max bytes of the training log at path
// (with its rotated part before it), starting at the first line that
// begins within them when they are not the whole log: a line cut in
// half could hold half a path that redaction would not recognise.
// truncated says whether anything was left out. A missing log is
// fs.ErrNotExist.
func readLogTail(path string, max int) (data []byte, truncated bool, err error) {
	cur, err := readTail(path, max)
	if err != nil {
		return nil, false, err
	}
	var old []byte
	oldExists := true
	if len(cur) < max {
		old, err = readTail(path+oldLogSuffix, max-len(cur))
		if errors.Is(err, fs.ErrNotExist) {
			oldExists, err = false, nil
		}
		if err != nil {
			return nil, false, err
		}
	}
	whole, err := logSize(path)
	if err != nil {
		return nil, false, err
	}
	if oldExists {
		n, err := logSize(path + oldLogSuffix)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, false, err
		}
		whole += n
	}
	data = append(old, cur...)
	if int64(len(data)) < whole {
		truncated = true
		if i := bytes.IndexByte(data, '\n'); i >= 0 {
			data = data[i+1:]
		}
	}
	return data, truncated, nil
}

// readTail reads the last n bytes of the file at path.
func readTail(path string, n int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("training log %s is not a regular file", path)
	}
	off := max(0, fi.Size()-int64(n))
	return io.ReadAll(io.NewSectionReader(f, off, int64(n)))
}

func logSize(path string) (int64, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}
