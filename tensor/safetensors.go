package tensor

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"unicode/utf8"
)

// A safetensors file is
//
//	u64 little-endian N   the header length
//	N bytes of JSON       {"name": {"dtype": "F32", "shape": [2, 3],
//	                       "data_offsets": [begin, end]}, ...,
//	                       "__metadata__": {"key": "value", ...}}
//	the data buffer       offsets are relative to its start, byte 8+N
//
// (https://github.com/huggingface/safetensors). The reference writer pads the
// JSON with spaces to a multiple of 8 bytes so the data is aligned; so does
// ours.
const (
	// MaxHeaderSize bounds the JSON header a reader will allocate, as the
	// reference implementation does (100 MiB).
	MaxHeaderSize = 100 << 20

	// metadataKey is the header entry that holds string metadata rather than
	// a tensor.
	metadataKey = "__metadata__"
)

// headerEntry is one tensor of a safetensors header. Pointers tell a missing
// field from a zero one: all three are required.
type headerEntry struct {
	DType       *string  `json:"dtype"`
	Shape       *[]int64 `json:"shape"`
	DataOffsets *[]int64 `json:"data_offsets"`
}

// ReadSafetensors indexes the safetensors file of size bytes in r. It reads
// only the header; tensor data stays in r. The file is not trusted: the
// header length is checked against the file and MaxHeaderSize before it is
// allocated, and every tensor must have a known dtype, a shape whose size
// matches its data_offsets, and data inside the file that overlaps no other
// tensor's. The returned metadata is the header's __metadata__ (nil if none).
func ReadSafetensors(r io.ReaderAt, size int64) (*Index, map[string]string, error) {
	x, meta, err := readSafetensors(r, size)
	if err != nil {
		return nil, nil, fmt.Errorf("safetensors: %w", err)
	}
	return x, meta, nil
}

func readSafetensors(r io.ReaderAt, size int64) (*Index, map[string]string, error) {
	if size < 8 {
		return nil, nil, fmt.Errorf("file of %d bytes is too short for the 8-byte header size", size)
	}
	var prefix [8]byte
	if err := readFull(r, prefix[:], 0); err != nil {
		return nil, nil, fmt.Errorf("read header size: %w", err)
	}
	n := binary.LittleEndian.Uint64(prefix[:])
	if n > uint64(size-8) {
		return nil, nil, fmt.Errorf("header size %d larger than the file", n)
	}
	if n > MaxHeaderSize {
		return nil, nil, fmt.Errorf("header size %d exceeds the limit of %d", n, MaxHeaderSize)
	}
	header := make([]byte, n)
	if err := readFull(r, header, 8); err != nil {
		return nil, nil, fmt.Errorf("read header: %w", err)
	}
	dataStart := 8 + int64(n)
	dataLen := size - dataStart

	if !utf8.Valid(header) {
		return nil, nil, errors.New("header is not valid UTF-8")
	}
	// The reference refuses a header that does not start with '{'; checking
	// it first also gives non-objects a clear error.
	if len(header) == 0 || header[0] != '{' {
		return nil, nil, errors.New("header is not a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(header))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, nil, errors.New("header is not a JSON object")
	}
	var (
		spans []Span
		meta  map[string]string
		seen  = make(map[string]bool)
	)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, fmt.Errorf("header JSON: %w", err)
		}
		name, ok := tok.(string)
		if !ok {
			return nil, nil, fmt.Errorf("header JSON: unexpected %v", tok)
		}
		// encoding/json would silently keep the last of two equal keys;
		// walking tokens lets a duplicate be refused instead.
		if seen[name] {
			return nil, nil, fmt.Errorf("duplicate entry %q", name)
		}
		seen[name] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, nil, fmt.Errorf("header JSON: entry %q: %w", name, err)
		}
		if name == metadataKey {
			if err := json.Unmarshal(raw, &meta); err != nil {
				return nil, nil, fmt.Errorf("%s must map strings to strings: %w", metadataKey, err)
			}
			continue
		}
		s, err := parseEntry(name, raw, dataStart, dataLen)
		if err != nil {
			return nil, nil, err
		}
		spans = append(spans, s)
	}
	if _, err := dec.Token(); err != nil {
		return nil, nil, fmt.Errorf("header JSON: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, nil, errors.New("header JSON: data after the object")
	}
	if err := checkOverlap(spans); err != nil {
		return nil, nil, err
	}
	x, err := NewIndex(r, spans)
	if err != nil {
		return nil, nil, err
	}
	return x, meta, nil
}

// parseEntry validates one tensor entry of the header against the data
// buffer [dataStart, dataStart+dataLen) of the file.
func parseEntry(name string, raw json.RawMessage, dataStart, dataLen int64) (Span, error) {
	if name == "" {
		return Span{}, errors.New("tensor with an empty name")
	}
	var e headerEntry
	if err := json.Unmarshal(raw, &e); err != nil {
		return Span{}, fmt.Errorf("tensor %q: %w", name, err)
	}
	switch {
	case e.DType == nil:
		return Span{}, fmt.Errorf("tensor %q: no dtype", name)
	case e.Shape == nil:
		return Span{}, fmt.Errorf("tensor %q: no shape", name)
	case e.DataOffsets == nil:
		return Span{}, fmt.Errorf("tensor %q: no data_offsets", name)
	case len(*e.DataOffsets) != 2:
		return Span{}, fmt.Errorf("tensor %q: data_offsets %v is not [begin, end]", name, *e.DataOffsets)
	}
	shape := *e.Shape // not nil: "shape": null leaves e.Shape nil
	want, err := byteSize(*e.DType, shape)
	if err != nil {
		return Span{}, fmt.Errorf("tensor %q: %w", name, err)
	}
	begin, end := (*e.DataOffsets)[0], (*e.DataOffsets)[1]
	switch {
	case begin < 0 || end < 0 || begin > end:
		return Span{}, fmt.Errorf("tensor %q: data_offsets [%d %d] are not a range", name, begin, end)
	case end > dataLen:
		return Span{}, fmt.Errorf("tensor %q: data_offsets [%d %d] end beyond the file's %d data bytes", name, begin, end, dataLen)
	case end-begin != want:
		return Span{}, fmt.Errorf("tensor %q: data_offsets [%d %d] hold %d bytes, shape %v of %s needs %d",
			name, begin, end, end-begin, shape, *e.DType, want)
	}
	return Span{Name: name, DType: *e.DType, Shape: shape, Offset: dataStart + begin, Size: end - begin}, nil
}

// checkOverlap refuses two tensors sharing bytes: a writer never produces
// that, and accepting it would let one upload alias another tensor's data.
// Empty tensors occupy no bytes and overlap nothing.
func checkOverlap(spans []Span) error {
	byOffset := make([]Span, 0, len(spans))
	for _, s := range spans {
		if s.Size > 0 {
			byOffset = append(byOffset, s)
		}
	}
	slices.SortFunc(byOffset, func(a, b Span) int {
		if a.Offset != b.Offset {
			return cmpInt64(a.Offset, b.Offset)
		}
		if a.Size != b.Size {
			return cmpInt64(a.Size, b.Size)
		}
		return strings.Compare(a.Name, b.Name) // a deterministic error

	})
	// Sorted by start, and disjoint up to the first overlap, the tensor
	// before i is the one reaching furthest, so comparing neighbours suffices.
	for i := 1; i < len(byOffset); i++ {
		prev, cur := byOffset[i-1], byOffset[i]
		if cur.Offset < prev.Offset+prev.Size {
			return fmt.Errorf("tensors %q and %q overlap", prev.Name, cur.Name)
		}
	}
	return nil
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// readFull reads exactly len(b) bytes at off, reporting a short file as
// io.ErrUnexpectedEOF.
func readFull(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// OpenSafetensors opens and indexes the safetensors file at path. The caller
// closes the returned file once done with the Index, which reads from it.
func OpenSafetensors(path string) (*Index, *os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	x, _, err := ReadSafetensors(f, fi.Size())
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return x, f, nil
}

// SafetensorsWriter streams a safetensors file: the header goes out when it
// is created, then the tensors' bytes as they are written, so a model of any
// size passes through in whatever pieces the caller has.
type SafetensorsWriter struct {
	w       io.Writer
	total   int64 // data bytes the header declares
	written int64
	err     error // sticky, once the file cannot be completed
}

// NewSafetensorsWriter writes to w the header for specs, whose data follows
// in the order given, and metadata. The specs' Offset is ignored and Size is
// computed from shape and dtype. Header keys are sorted, so the same specs
// always give the same bytes.
func NewSafetensorsWriter(w io.Writer, specs []Span, metadata map[string]string) (*SafetensorsWriter, error) {
	header, total, err := safetensorsHeader(specs, metadata)
	if err != nil {
		return nil, err
	}
	var prefix [8]byte
	binary.LittleEndian.PutUint64(prefix[:], uint64(len(header)))
	if _, err := w.Write(prefix[:]); err != nil {
		return nil, err
	}
	if _, err := w.Write(header); err != nil {
		return nil, err
	}
	return &SafetensorsWriter{w: w, total: total}, nil
}

// Write writes tensor bytes: all tensors, in the order of the specs,
// concatenated. Writing past the declared data is an error and writes
// nothing.
func (s *SafetensorsWriter) Write(p []byte) (int, error) {
	if s.err != nil {
		return 0, s.err
	}
	if int64(len(p)) > s.total-s.written {
		return 0, fmt.Errorf("safetensors: %d more bytes than the header declares", int64(len(p))-(s.total-s.written))
	}
	n, err := s.w.Write(p)
	s.written += int64(n)
	if err != nil {
		s.err = err
	}
	return n, err
}

// Close checks that exactly the declared bytes were written. It does not
// close the underlying writer, which the caller may still need to sync.
func (s *SafetensorsWriter) Close() error {
	if s.err != nil {
		return s.err
	}
	if s.written != s.total {
		return fmt.Errorf("safetensors: wrote %d data bytes, the header declares %d", s.written, s.total)
	}
	return nil
}

// SafetensorsSize returns the exact size of the file NewSafetensorsWriter
// produces for specs and metadata, or -1 if it would refuse them. Senders
// need it up front, for example to announce a length.
func SafetensorsSize(specs []Span, metadata map[string]string) int64 {
	header, total, err := safetensorsHeader(specs, metadata)
	if err != nil {
		return -1
	}
	return 8 + int64(len(header)) + total
}

// headerTensor is how one tensor appears in a written header; field order is
// the reference's.
type headerTensor struct {
	DType       string   `json:"dtype"`
	Shape       []int64  `json:"shape"`
	DataOffsets [2]int64 `json:"data_offsets"`
}

// safetensorsHeader returns the padded header JSON for specs laid out in
// order, and the size of the data that follows.
func safetensorsHeader(specs []Span, metadata map[string]string) ([]byte, int64, error) {
	entries := make(map[string]any, len(specs)+1)
	var off int64
	for _, s := range specs {
		if s.Name == "" {
			return nil, 0, errors.New("safetensors: tensor with an empty name")
		}
		if s.Name == metadataKey {
			return nil, 0, fmt.Errorf("safetensors: %q is reserved, not a tensor name", metadataKey)
		}
		if !utf8.ValidString(s.Name) {
			return nil, 0, fmt.Errorf("safetensors: tensor %q: name is not valid UTF-8", s.Name)
		}
		if _, dup := entries[s.Name]; dup {
			return nil, 0, fmt.Errorf("safetensors: duplicate tensor %q", s.Name)
		}
		size, err := byteSize(s.DType, s.Shape)
		if err != nil {
			return nil, 0, fmt.Errorf("safetensors: tensor %q: %w", s.Name, err)
		}
		if size > math.MaxInt64-off {
			return nil, 0, errors.New("safetensors: tensors too large")
		}
		shape := s.Shape
		if shape == nil {
			shape = []int64{} // a scalar is [], never null
		}
		entries[s.Name] = headerTensor{DType: s.DType, Shape: shape, DataOffsets: [2]int64{off, off + size}}
		off += size
	}
	for k, v := range metadata {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return nil, 0, fmt.Errorf("safetensors: metadata %q is not valid UTF-8", k)
		}
	}
	if len(metadata) > 0 {
		entries[metadataKey] = metadata
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false) // names like "a<b" stay readable, as other writers leave them
	if err := enc.Encode(entries); err != nil {
		return nil, 0, fmt.Errorf("safetensors: header: %w", err)
	}
	header := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	if pad := (8 - len(header)%8) % 8; pad > 0 {
		header = append(header, strings.Repeat(" ", pad)...)
	}
	if len(header) > MaxHeaderSize {
		return nil, 0, fmt.Errorf("safetensors: header of %d bytes exceeds the limit of %d", len(header), MaxHeaderSize)
	}
	return header, off, nil
}

// WriteFloat32Safetensors writes small in-memory float32 tensors as a
// safetensors file, in name order. A tensor without an entry in shapes is
// one-dimensional. It is meant for tests and examples: real models stream
// through SafetensorsWriter.
func WriteFloat32Safetensors(w io.Writer, tensors map[string][]float32, shapes map[string][]int64) error {
	names := make([]string, 0, len(tensors))
	for name := range tensors {
		names = append(names, name)
	}
	slices.Sort(names)
	specs := make([]Span, len(names))
	for i, name := range names {
		shape, ok := shapes[name]
		if !ok {
			shape = []int64{int64(len(tensors[name]))}
		}
		if n := elements(shape); n != int64(len(tensors[name])) {
			return fmt.Errorf("safetensors: tensor %q: %d values, shape %v needs %d", name, len(tensors[name]), shape, n)
		}
		specs[i] = Span{Name: name, DType: F32, Shape: shape}
	}
	sw, err := NewSafetensorsWriter(w, specs, nil)
	if err != nil {
		return err
	}
	var buf []byte
	for _, name := range names {
		buf = buf[:0]
		for _, v := range tensors[name] {
			buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(v))
		}
		if _, err := sw.Write(buf); err != nil {
			return err
		}
	}
	return sw.Close()
}
