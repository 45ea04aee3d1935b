package tensor

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"unsafe"
)

// This file is how the aggregators read their inputs. Reading a chunk with
// pread copies every byte from the page cache into a buffer, a pass over
// memory as long as the sum itself. A committed file (the director's task
// results and models, which nothing rewrites in place) can instead be
// mapped read-only and summed where it lies. Where mapping is not possible
// (another reader than an *os.File, another OS, a big-endian host, a file
// shorter than its index) the same calls fall back to pread.

// errFault is wrapped by the error of a read that faulted in a mapped file:
// the file shrank after it was mapped.
var errFault = errors.New("read fault in a mapped file (was it truncated?)")

// testHookMapped, when set, runs once an aggregation's files are mapped:
// the tests truncate a file there, under the running aggregation.
var testHookMapped func()

// mapping is one file mapped read-only.
type mapping struct {
	name string // the file's name, for errors
	data []byte
}

// mappings are the files of one aggregation that could be mapped, by the
// reader their Index reads from. A nil *mappings maps nothing.
type mappings struct {
	byReader map[io.ReaderAt]*mapping
}

// mapIndexes maps the file behind each Index whose reader is an *os.File
// holding every one of its spans. Files that cannot be mapped are left to
// pread; an error here is never fatal.
func mapIndexes(xs ...*Index) *mappings {
	if !littleEndian || !canMmap {
		return nil
	}
	ms := &mappings{byReader: map[io.ReaderAt]*mapping{}}
	for _, x := range xs {
		if x == nil {
			continue
		}
		f, ok := x.R.(*os.File)
		if !ok {
			continue
		}
		if _, done := ms.byReader[f]; done {
			continue
		}
		ms.byReader[f] = nil // tried: a second Index of f does not retry
		fi, err := f.Stat()
		if err != nil || !fi.Mode().IsRegular() || fi.Size() <= 0 || fi.Size() != int64(int(fi.Size())) {
			continue
		}
		short := false
		for _, s := range x.Tensors {
			short = short || s.Offset+s.Size > fi.Size()
		}
		if short {
			continue // pread reports the short file as it always has
		}
		data, err := mmapFile(f, fi.Size())
		if err != nil {
			continue
		}
		ms.byReader[f] = &mapping{name: f.Name(), data: data}
	}
	if testHookMapped != nil {
		testHookMapped()
	}
	return ms
}

// close unmaps every file. Nothing may read a view after it.
func (ms *mappings) close() {
	if ms == nil {
		return
	}
	for _, m := range ms.byReader {
		if m != nil {
			munmapFile(m.data)
		}
	}
	ms.byReader = nil
}

// of returns r's mapping, or nil.
func (ms *mappings) of(r io.ReaderAt) *mapping {
	if ms == nil {
		return nil
	}
	return ms.byReader[r]
}

// view returns the len(buf) float32s at off in r: the mapped file itself
// when r is mapped (read only: the caller must not write to it), else
// buf, read with pread.
func (ms *mappings) view(r io.ReaderAt, off int64, buf []float32) ([]float32, error) {
	if m := ms.of(r); m != nil && off%4 == 0 && len(buf) > 0 {
		if off < 0 || off+4*int64(len(buf)) > int64(len(m.data)) {
			return nil, io.ErrUnexpectedEOF
		}
		return unsafe.Slice((*float32)(unsafe.Pointer(&m.data[off])), len(buf)), nil
	}
	return buf, readFloat32s(r, off, buf)
}

// read fills dst with the float32s at off in r, a copy the caller may
// change: from the mapping when r is mapped, else with pread.
func (ms *mappings) read(r io.ReaderAt, off int64, dst []float32) error {
	if m := ms.of(r); m != nil {
		if off < 0 || off+4*int64(len(dst)) > int64(len(m.data)) {
			return io.ErrUnexpectedEOF
		}
		copy(float32Bytes(dst), m.data[off:])
		return nil
	}
	return readFloat32s(r, off, dst)
}

// guard runs f, which may read mapped files, in the calling goroutine with
// memory faults turned into panics, and a fault inside a mapping into an
// error naming its file: a file truncated under a running aggregation
// (which the director never does, but a disk or an operator might) fails
// the aggregation instead of crashing the process.
func (ms *mappings) guard(f func() error) (err error) {
	if ms == nil || len(ms.byReader) == 0 {
		return f()
	}
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		if fault, ok := r.(interface{ Addr() uintptr }); ok {
			for _, m := range ms.byReader {
				if m == nil {
					continue
				}
				start := uintptr(unsafe.Pointer(unsafe.SliceData(m.data)))
				if a := fault.Addr(); a >= start && a < start+uintptr(len(m.data)) {
					err = fmt.Errorf("%s: byte %d: %w", m.name, a-start, errFault)
					return
				}
			}
		}
		panic(r)
	}()
	return f()
}
