package tensor

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/basepb"
)

// An envoy reports a round as one serialized aggregatorpb.TaskResults cut
// into DataStream chunks. The message is as big as the model, so both ends
// handle its protobuf encoding by hand instead of with proto.Marshal and
// proto.Unmarshal, which need all of it in memory:
//
//	TaskResults   1 header MessageHeader   (1 sender, 2 receiver,
//	                                        3 federation_uuid,
//	                                        4 single_col_cert_common_name)
//	              2 round_number int32
//	              3 task_name string
//	              4 data_size int32
//	              5 tensors repeated NamedTensor
//	NamedTensor   1 name, 2 round_number, 3 lossless, 4 report,
//	              5 tags repeated string,
//	              6 transformer_metadata repeated MetadataProto (2 int_list),
//	              7 data_bytes
//
// The writer emits fields in field-number order and omits proto3 zero
// values, which is exactly what proto.Marshal does, so its output is
// byte-identical to marshalling the same message. The reader accepts any
// valid encoding: any field order, unknown fields, packed or unpacked
// int_list.
const (
	// MaxNameLen bounds tensor and metric names, tags and header strings in
	// task results, so a reader never allocates a string an attacker sized.
	MaxNameLen = 1 << 10

	// MaxTags bounds the tags of one NamedTensor.
	MaxTags = 64

	// MaxDims bounds the dimensions of one tensor's shape.
	MaxDims = 32

	// MaxTensors bounds the NamedTensors (model tensors and metrics) of one
	// TaskResults; real models have thousands at most, and the reader keeps
	// a Span per tensor.
	MaxTensors = 1 << 17

	// maxMetadata bounds the MetadataProtos of one NamedTensor; only the
	// first one carries the shape.
	maxMetadata = 64

	// maxGroupDepth bounds nested groups inside unknown fields, which a
	// reader must skip by walking them.
	maxGroupDepth = 64
)

// ErrEmptyTaskResults is returned for task results without a single byte:
// the wire contract makes an empty SendLocalTaskResults stream an error.
var ErrEmptyTaskResults = errors.New("empty task results")

// Metric is one scalar an envoy reports with its task results.
type Metric struct {
	Name  string
	Value float32
}

// TaskResultsHeader holds the small fields of a TaskResults: the
// MessageHeader's four strings and the round, task name and data size.
type TaskResultsHeader struct {
	Sender, Receiver, FederationUUID, CommonName string
	Round                                        int32
	TaskName                                     string
	DataSize                                     int32 // the samples trained on, FedAvg's weight
}

// Field numbers of the messages above.
const (
	fieldHeader     protowire.Number = 1 // TaskResults
	fieldRound      protowire.Number = 2
	fieldTaskName   protowire.Number = 3
	fieldDataSize   protowire.Number = 4
	fieldTensors    protowire.Number = 5
	fieldSender     protowire.Number = 1 // MessageHeader
	fieldReceiver   protowire.Number = 2
	fieldFederation protowire.Number = 3
	fieldCommonName protowire.Number = 4
	fieldName       protowire.Number = 1 // NamedTensor
	fieldLossless   protowire.Number = 3
	fieldReport     protowire.Number = 4
	fieldTags       protowire.Number = 5
	fieldMetadata   protowire.Number = 6
	fieldDataBytes  protowire.Number = 7
	fieldIntToFloat protowire.Number = 1 // MetadataProto
	fieldIntList    protowire.Number = 2
	fieldBoolList   protowire.Number = 3
)

// errPrefix starts every task results error, as "safetensors: " does the
// safetensors ones, so a log line says which decoder refused what.
const errPrefix = "task results: "

// WriteTaskResults writes the protobuf encoding of a TaskResults whose
// tensors are every tensor of model (tags ["trained"], not report, data
// streamed from model.R), followed by one report tensor per metric (tags
// ["metric"], a scalar float32). It returns the bytes written. Each
// NamedTensor's length is computed from its span before its bytes are
// copied, so the model passes through in the pieces io.Copy uses (or w's
// ReadFrom, which NewChunkWriter's writer has). w is not flushed or closed.
// model may be nil for a task that reports only metrics, such as a
// validation.
func WriteTaskResults(w io.Writer, h TaskResultsHeader, model *Index, metrics []Metric) (int64, error) {
	if model == nil {
		model = &Index{}
	}
	if err := checkTaskResults(h, model, metrics); err != nil {
		return 0, errors.New(errPrefix + err.Error())
	}
	var (
		total int64
		buf   []byte
	)
	flush := func() error {
		n, err := w.Write(buf)
		total += int64(n)
		buf = buf[:0]
		return err
	}

	var hdr []byte
	hdr = appendString(hdr, fieldSender, h.Sender)
	hdr = appendString(hdr, fieldReceiver, h.Receiver)
	hdr = appendString(hdr, fieldFederation, h.FederationUUID)
	hdr = appendString(hdr, fieldCommonName, h.CommonName)
	// The header is always present, even empty, as the envoy always sets it.
	buf = protowire.AppendTag(buf, fieldHeader, protowire.BytesType)
	buf = protowire.AppendBytes(buf, hdr)
	if h.Round != 0 {
		buf = protowire.AppendTag(buf, fieldRound, protowire.VarintType)
		buf = protowire.AppendVarint(buf, uint64(int64(h.Round)))
	}
	buf = appendString(buf, fieldTaskName, h.TaskName)
	if h.DataSize != 0 {
		buf = protowire.AppendTag(buf, fieldDataSize, protowire.VarintType)
		buf = protowire.AppendVarint(buf, uint64(int64(h.DataSize)))
	}

	trained := []string{"trained"}
	for _, s := range model.Tensors {
		buf = appendTensorPrefix(buf, s.Name, trained, false, s.Shape, s.Size)
		if err := flush(); err != nil {
			return total, err
		}
		n, err := io.CopyN(w, model.Section(s), s.Size)
		total += n
		if err != nil {
			return total, fmt.Errorf("%stensor %q: %w", errPrefix, s.Name, err)
		}
	}
	metric := []string{"metric"}
	for _, m := range metrics {
		buf = appendTensorPrefix(buf, m.Name, metric, true, nil, 4)
		buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(m.Value))
	}
	if err := flush(); err != nil {
		return total, err
	}
	return total, nil
}

// checkTaskResults refuses what the wire cannot carry or a reader would
// refuse, so the envoy learns it before sending gigabytes.
func checkTaskResults(h TaskResultsHeader, model *Index, metrics []Metric) error {
	for _, s := range []string{h.Sender, h.Receiver, h.FederationUUID, h.CommonName, h.TaskName} {
		if err := checkString("header field", s); err != nil {
			return err
		}
	}
	if len(model.Tensors)+len(metrics) > MaxTensors {
		return fmt.Errorf("%d tensors and metrics exceed the limit of %d", len(model.Tensors)+len(metrics), MaxTensors)
	}
	seen := make(map[string]bool, len(model.Tensors))
	for _, s := range model.Tensors {
		if err := checkName(s.Name); err != nil {
			return err
		}
		if seen[s.Name] {
			return fmt.Errorf("duplicate tensor %q", s.Name)
		}
		seen[s.Name] = true
		if s.DType != F32 {
			return fmt.Errorf("tensor %q: dtype %s, the wire carries only %s", s.Name, s.DType, F32)
		}
		if len(s.Shape) > MaxDims {
			return fmt.Errorf("tensor %q: %d dimensions exceed the limit of %d", s.Name, len(s.Shape), MaxDims)
		}
		for _, d := range s.Shape {
			if d < 0 || d > math.MaxInt32 {
				return fmt.Errorf("tensor %q: dimension %d of shape %v does not fit the wire's int32", s.Name, d, s.Shape)
			}
		}
		if err := checkDataSize(s.Size, s.Shape); err != nil {
			return fmt.Errorf("tensor %q: %w", s.Name, err)
		}
	}
	seen = make(map[string]bool, len(metrics))
	for _, m := range metrics {
		if err := checkName(m.Name); err != nil {
			return fmt.Errorf("metric: %w", err)
		}
		if seen[m.Name] {
			return fmt.Errorf("duplicate metric %q", m.Name)
		}
		seen[m.Name] = true
	}
	return nil
}

func checkName(name string) error {
	if name == "" {
		return errors.New("tensor with an empty name")
	}
	return checkString("tensor name", name)
}

func checkString(what, s string) error {
	if len(s) > MaxNameLen {
		return fmt.Errorf("%s of %d bytes exceeds the limit of %d", what, len(s), MaxNameLen)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%s %q is not valid UTF-8", what, s)
	}
	return nil
}

// appendString appends a proto3 string field, omitted when empty as
// proto.Marshal omits it.
func appendString(b []byte, num protowire.Number, s string) []byte {
	if s == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, s)
}

// appendTensorPrefix appends the tensors field's tag and length and then
// everything of a NamedTensor up to and including the tag and length of its
// data_bytes, which the caller appends or streams next (size bytes).
func appendTensorPrefix(b []byte, name string, tags []string, report bool, shape []int64, size int64) []byte {
	var packed int
	for _, d := range shape {
		packed += protowire.SizeVarint(uint64(d))
	}
	meta := 0
	if packed > 0 {
		meta = protowire.SizeTag(fieldIntList) + protowire.SizeBytes(packed)
	}
	n := protowire.SizeTag(fieldName) + protowire.SizeBytes(len(name)) +
		protowire.SizeTag(fieldLossless) + 1 +
		protowire.SizeTag(fieldMetadata) + protowire.SizeBytes(meta)
	if report {
		n += protowire.SizeTag(fieldReport) + 1
	}
	for _, t := range tags {
		n += protowire.SizeTag(fieldTags) + protowire.SizeBytes(len(t))
	}
	msgLen := uint64(n)
	if size > 0 {
		msgLen += uint64(protowire.SizeTag(fieldDataBytes)+protowire.SizeVarint(uint64(size))) + uint64(size)
	}

	b = protowire.AppendTag(b, fieldTensors, protowire.BytesType)
	b = protowire.AppendVarint(b, msgLen)
	b = appendString(b, fieldName, name)
	b = protowire.AppendTag(b, fieldLossless, protowire.VarintType)
	b = protowire.AppendVarint(b, 1)
	if report {
		b = protowire.AppendTag(b, fieldReport, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	for _, t := range tags {
		b = protowire.AppendTag(b, fieldTags, protowire.BytesType)
		b = protowire.AppendString(b, t)
	}
	// One MetadataProto is always there, empty for a scalar, because the
	// reader takes the shape from it.
	b = protowire.AppendTag(b, fieldMetadata, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(meta))
	if packed > 0 {
		b = protowire.AppendTag(b, fieldIntList, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(packed))
		for _, d := range shape {
			b = protowire.AppendVarint(b, uint64(d))
		}
	}
	if size > 0 {
		b = protowire.AppendTag(b, fieldDataBytes, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(size))
	}
	return b
}

// NewChunkWriter returns a writer that cuts what is written to it into
// DataStream chunks of chunk bytes (api.ChunkSize when 0) with size ==
// len(npbytes), and hands each to send. Close sends the last, partial chunk;
// it never sends an empty one, and returns ErrEmptyTaskResults if nothing
// was written at all. After an error from send, every call returns it.
//
// Each chunk gets a fresh buffer: grpc-go says a message must not be
// modified after SendMsg, because stats handlers may read it later.
func NewChunkWriter(send func(*basepb.DataStream) error, chunk int) io.WriteCloser {
	if chunk <= 0 {
		chunk = api.ChunkSize
	}
	return &chunkWriter{send: send, chunk: chunk}
}

type chunkWriter struct {
	send   func(*basepb.DataStream) error
	chunk  int
	buf    []byte
	wrote  bool
	err    error
	closed bool
}

func (c *chunkWriter) Write(p []byte) (int, error) {
	var n int
	for len(p) > 0 {
		if err := c.room(); err != nil {
			return n, err
		}
		k := copy(c.buf[len(c.buf):cap(c.buf)], p)
		c.buf = c.buf[:len(c.buf)+k]
		c.wrote = true
		n += k
		p = p[k:]
	}
	return n, c.err
}

// ReadFrom fills chunks straight from r, saving io.Copy's intermediate
// buffer when a model is streamed through.
func (c *chunkWriter) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	for {
		if err := c.room(); err != nil {
			return total, err
		}
		k, err := r.Read(c.buf[len(c.buf):cap(c.buf)])
		c.buf = c.buf[:len(c.buf)+k]
		total += int64(k)
		if k > 0 {
			c.wrote = true
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// room makes sure the buffer has space, sending it if it is full.
func (c *chunkWriter) room() error {
	if c.err != nil {
		return c.err
	}
	if c.closed {
		c.err = errors.New("chunk writer is closed")
		return c.err
	}
	if c.buf == nil {
		c.buf = make([]byte, 0, c.chunk)
	}
	if len(c.buf) < cap(c.buf) {
		return nil
	}
	return c.flush()
}

func (c *chunkWriter) flush() error {
	b := c.buf
	c.buf = nil
	if err := c.send(&basepb.DataStream{Size: uint32(len(b)), Npbytes: b}); err != nil {
		c.err = err
	}
	return c.err
}

func (c *chunkWriter) Close() error {
	if c.closed || c.err != nil {
		return c.err
	}
	c.closed = true
	if !c.wrote {
		c.err = ErrEmptyTaskResults
		return c.err
	}
	if len(c.buf) > 0 {
		return c.flush()
	}
	return nil
}

// TaskResults is a TaskResults message indexed in place: the small fields
// decoded, the model tensors' data left in the file.
type TaskResults struct {
	Header TaskResultsHeader
	// Model is the non-report tensors; Offsets point at data_bytes inside
	// the file. A span with Delta set holds the difference from the
	// round's model (OpenFL's delta_updates), not the values.
	Model   *Index
	Metrics []Metric // the report tensors, in the order sent
}

// ReadTaskResults decodes the serialized TaskResults of size bytes in r (the
// concatenated npbytes of a SendLocalTaskResults stream) without reading the
// tensors' data: for each data_bytes field it records where the bytes are.
// Nothing is trusted: every length is checked against its enclosing message
// and the file before use, strings and lists are bounded by MaxNameLen,
// MaxTags, MaxDims and MaxTensors, each model tensor's data must match its
// shape, and each report tensor must be a single float32.
func ReadTaskResults(r io.ReaderAt, size int64) (*TaskResults, error) {
	if size == 0 {
		return nil, ErrEmptyTaskResults
	}
	if size < 0 {
		return nil, fmt.Errorf("%snegative size %d", errPrefix, size)
	}
	d := &wireReader{r: r, size: size}
	tr, err := d.taskResults()
	if err != nil {
		return nil, errors.New(errPrefix + err.Error())
	}
	return tr, nil
}

// wireReader walks protobuf encoding in a file through a small window, so
// that tags and short fields cost no system call each and long ones (data)
// are skipped without being read.
type wireReader struct {
	r      io.ReaderAt
	size   int64
	win    []byte
	winOff int64
}

const wireWindow = 32 << 10

// peek returns min(n, end-off) bytes at off; n must be at most wireWindow.
// The bytes are valid until the next call.
func (d *wireReader) peek(off, end int64, n int) ([]byte, error) {
	if end-off < int64(n) {
		n = int(end - off)
	}
	if off >= d.winOff && off+int64(n) <= d.winOff+int64(len(d.win)) {
		return d.win[off-d.winOff : off-d.winOff+int64(n)], nil
	}
	if d.win == nil {
		d.win = make([]byte, 0, min(wireWindow, d.size)) // every request fits: n <= size-off
	}
	m := int64(cap(d.win))
	if d.size-off < m {
		m = d.size - off
	}
	k, err := d.r.ReadAt(d.win[:m], off)
	if int64(k) < m {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		d.win = d.win[:0]
		return nil, fmt.Errorf("read at byte %d: %w", off, err)
	}
	d.win, d.winOff = d.win[:m], off
	return d.win[:n], nil
}

// varint decodes the varint at off, which must end before end.
func (d *wireReader) varint(off, end int64) (uint64, int64, error) {
	b, err := d.peek(off, end, binary.MaxVarintLen64)
	if err != nil {
		return 0, 0, err
	}
	v, n := protowire.ConsumeVarint(b)
	if n < 0 {
		// Not protowire's error text: protobuf-go words it differently
		// from run to run to keep callers from matching it.
		if errors.Is(protowire.ParseError(n), io.ErrUnexpectedEOF) {
			return 0, 0, fmt.Errorf("varint at byte %d: %w", off, io.ErrUnexpectedEOF)
		}
		return 0, 0, fmt.Errorf("varint at byte %d overflows 64 bits", off)
	}
	return v, off + int64(n), nil
}

// field is one decoded field. For BytesType, [off, off+n) is the payload.
type field struct {
	num    protowire.Number
	typ    protowire.Type
	at     int64 // offset of the tag
	v      uint64
	off, n int64
}

// next decodes the field at pos inside a message ending at end and returns
// it with the offset after it. Groups, which only unknown fields can be, are
// skipped whole and returned as a StartGroupType field.
func (d *wireReader) next(pos, end int64, depth int) (field, int64, error) {
	tag, p, err := d.varint(pos, end)
	if err != nil {
		return field{}, 0, err
	}
	num, typ := protowire.DecodeTag(tag)
	if !num.IsValid() {
		return field{}, 0, fmt.Errorf("invalid field number %d at byte %d", num, pos)
	}
	f := field{num: num, typ: typ, at: pos}
	switch typ {
	case protowire.VarintType:
		f.v, p, err = d.varint(p, end)
	case protowire.Fixed32Type, protowire.Fixed64Type:
		size := 4
		if typ == protowire.Fixed64Type {
			size = 8
		}
		var b []byte
		if b, err = d.peek(p, end, size); err == nil && len(b) < size {
			err = fmt.Errorf("field %d at byte %d is truncated", num, pos)
		}
		p += int64(size)
	case protowire.BytesType:
		var n uint64
		if n, p, err = d.varint(p, end); err != nil {
			break
		}
		if n > uint64(end-p) {
			where := "its message"
			if end == d.size {
				where = "the file"
			}
			err = fmt.Errorf("field %d at byte %d: length %d runs beyond the end of %s (byte %d)", num, pos, n, where, end)
			break
		}
		f.off, f.n = p, int64(n)
		p += int64(n)
	case protowire.StartGroupType:
		p, err = d.skipGroup(num, p, end, depth+1)
	case protowire.EndGroupType:
		// Returned as is: only skipGroup may accept it.
	default:
		err = fmt.Errorf("field %d at byte %d: invalid wire type %d", num, pos, typ)
	}
	if err != nil {
		return field{}, 0, err
	}
	return f, p, nil
}

// skipGroup skips the body of group num starting at pos, through its end
// group tag.
func (d *wireReader) skipGroup(num protowire.Number, pos, end int64, depth int) (int64, error) {
	if depth > maxGroupDepth {
		return 0, fmt.Errorf("groups nested deeper than %d at byte %d", maxGroupDepth, pos)
	}
	for pos < end {
		f, p, err := d.next(pos, end, depth)
		if err != nil {
			return 0, err
		}
		if f.typ == protowire.EndGroupType {
			if f.num != num {
				return 0, fmt.Errorf("end of group %d at byte %d closes group %d", f.num, f.at, num)
			}
			return p, nil
		}
		pos = p
	}
	return 0, fmt.Errorf("group %d is not closed before byte %d", num, end)
}

// fields calls fn for each field of the message [pos, end), refusing a
// stray end group tag.
func (d *wireReader) fields(pos, end int64, fn func(f field) error) error {
	for pos < end {
		f, p, err := d.next(pos, end, 0)
		if err != nil {
			return err
		}
		if f.typ == protowire.EndGroupType {
			return fmt.Errorf("end of group %d at byte %d without a start", f.num, f.at)
		}
		if err := fn(f); err != nil {
			return err
		}
		pos = p
	}
	return nil
}

// str reads a string field of at most MaxNameLen bytes.
func (d *wireReader) str(f field, what string) (string, error) {
	if f.n > MaxNameLen {
		return "", fmt.Errorf("%s at byte %d: %d bytes exceed the limit of %d", what, f.at, f.n, MaxNameLen)
	}
	b, err := d.peek(f.off, f.off+f.n, int(f.n))
	if err != nil {
		return "", err
	}
	if !utf8.Valid(b) {
		// proto.Unmarshal refuses such strings too.
		return "", fmt.Errorf("%s at byte %d is not valid UTF-8", what, f.at)
	}
	return string(b), nil
}

// wireTensor is what the reader keeps of one NamedTensor.
type wireTensor struct {
	name             string
	report           bool
	delta            bool // tagged "delta": the difference from the round's model
	shape            []int64
	hasShape         bool
	dataOff, dataLen int64
}

func (d *wireReader) taskResults() (*TaskResults, error) {
	var (
		tr      TaskResults
		spans   []Span
		names   = make(map[string]bool)
		metrics = make(map[string]bool)
		count   int
	)
	err := d.fields(0, d.size, func(f field) error {
		var err error
		switch {
		case f.num == fieldHeader && f.typ == protowire.BytesType:
			// A message field that occurs twice is merged, as
			// proto.Unmarshal merges it, so each occurrence updates the
			// same header.
			err = d.header(f, &tr.Header)
		case f.num == fieldRound && f.typ == protowire.VarintType:
			tr.Header.Round = int32(f.v)
		case f.num == fieldTaskName && f.typ == protowire.BytesType:
			tr.Header.TaskName, err = d.str(f, "task_name")
		case f.num == fieldDataSize && f.typ == protowire.VarintType:
			tr.Header.DataSize = int32(f.v)
		case f.num == fieldTensors && f.typ == protowire.BytesType:
			if count++; count > MaxTensors {
				return fmt.Errorf("more than %d tensors", MaxTensors)
			}
			var t wireTensor
			if t, err = d.tensor(f, count-1); err != nil {
				return err
			}
			if !t.hasShape {
				return fmt.Errorf("tensor %q: no transformer_metadata, so no shape", t.name)
			}
			if t.report {
				if metrics[t.name] {
					return fmt.Errorf("duplicate metric %q", t.name)
				}
				metrics[t.name] = true
				// Python code often reports np.array([x]); any single
				// float32 is a scalar for this purpose.
				if elements(t.shape) != 1 || t.dataLen != 4 {
					return fmt.Errorf("metric %q: not a scalar float32 (shape %v, %d data bytes)", t.name, t.shape, t.dataLen)
				}
				b, err := d.peek(t.dataOff, t.dataOff+4, 4)
				if err != nil {
					return fmt.Errorf("metric %q: %w", t.name, err)
				}
				tr.Metrics = append(tr.Metrics, Metric{Name: t.name, Value: math.Float32frombits(binary.LittleEndian.Uint32(b))})
				return nil
			}
			if names[t.name] {
				return fmt.Errorf("duplicate tensor %q", t.name)
			}
			names[t.name] = true
			if err := checkDataSize(t.dataLen, t.shape); err != nil {
				return fmt.Errorf("tensor %q: %w", t.name, err)
			}
			spans = append(spans, Span{Name: t.name, DType: F32, Shape: t.shape, Offset: t.dataOff, Size: t.dataLen, Delta: t.delta})
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if tr.Model, err = NewIndex(d.r, spans); err != nil {
		return nil, err
	}
	return &tr, nil
}

func (d *wireReader) header(f field, h *TaskResultsHeader) error {
	return d.fields(f.off, f.off+f.n, func(g field) error {
		if g.typ != protowire.BytesType {
			return nil
		}
		var err error
		switch g.num {
		case fieldSender:
			h.Sender, err = d.str(g, "header sender")
		case fieldReceiver:
			h.Receiver, err = d.str(g, "header receiver")
		case fieldFederation:
			h.FederationUUID, err = d.str(g, "header federation_uuid")
		case fieldCommonName:
			h.CommonName, err = d.str(g, "header single_col_cert_common_name")
		}
		return err
	})
}

// tensor decodes the NamedTensor in f, the i-th tensor of the message.
func (d *wireReader) tensor(f field, i int) (wireTensor, error) {
	var (
		t     wireTensor
		tags  int
		metas int
	)
	err := d.fields(f.off, f.off+f.n, func(g field) error {
		var err error
		switch {
		case g.num == fieldName && g.typ == protowire.BytesType:
			t.name, err = d.str(g, "name")
		case g.num == fieldReport && g.typ == protowire.VarintType:
			t.report = g.v != 0
		case g.num == fieldTags && g.typ == protowire.BytesType:
			// Tags are bounded and checked as proto.Unmarshal checks
			// them; of their meanings only a delta and a lossy encoding
			// matter here (see RequestedForm for the others).
			if tags++; tags > MaxTags {
				return fmt.Errorf("more than %d tags", MaxTags)
			}
			var tag string
			if tag, err = d.str(g, "tag"); err != nil {
				return err
			}
			switch tag {
			case TagDelta:
				t.delta = true
			case TagLossyCompressed:
				return fmt.Errorf("tagged %q: a lossy compression pipeline's encoding; use the lossless one (OpenFL's default NoCompressionPipeline)", tag)
			}
		case g.num == fieldMetadata && g.typ == protowire.BytesType:
			if metas++; metas > maxMetadata {
				return fmt.Errorf("more than %d transformer_metadata", maxMetadata)
			}
			// Only the first one carries the shape, but all are walked, as
			// proto.Unmarshal walks them, so that both refuse the same.
			shape, err := d.metadata(g, metas == 1)
			if metas == 1 {
				t.shape, t.hasShape = shape, err == nil
			}
			return err
		case g.num == fieldDataBytes && g.typ == protowire.BytesType:
			t.dataOff, t.dataLen = g.off, g.n
		}
		return err
	})
	switch {
	case err != nil && t.name != "":
		return t, fmt.Errorf("tensor %q: %w", t.name, err)
	case err != nil:
		return t, fmt.Errorf("tensor #%d at byte %d: %w", i, f.at, err)
	case t.name == "":
		return t, fmt.Errorf("tensor #%d at byte %d has no name", i, f.at)
	}
	return t, nil
}

// metadata walks the MetadataProto in f and, if keep, returns its int_list
// as a shape. int_list and bool_list may be packed or not (a proto3 parser
// must accept both); the int_to_float map entries are only walked.
func (d *wireReader) metadata(f field, keep bool) ([]int64, error) {
	shape := []int64{}
	add := func(num protowire.Number, v uint64) error {
		if num != fieldIntList || !keep {
			return nil
		}
		if len(shape) == MaxDims {
			return fmt.Errorf("shape with more than %d dimensions", MaxDims)
		}
		if dim := int32(v); dim < 0 {
			return fmt.Errorf("negative dimension %d", dim)
		}
		shape = append(shape, int64(int32(v)))
		return nil
	}
	err := d.fields(f.off, f.off+f.n, func(g field) error {
		switch {
		case g.num == fieldIntToFloat && g.typ == protowire.BytesType:
			return d.fields(g.off, g.off+g.n, func(field) error { return nil })
		case g.num != fieldIntList && g.num != fieldBoolList:
			return nil
		case g.typ == protowire.VarintType:
			return add(g.num, g.v)
		case g.typ == protowire.BytesType:
			for pos, end := g.off, g.off+g.n; pos < end; {
				v, p, err := d.varint(pos, end)
				if err != nil {
					return err
				}
				if err := add(g.num, v); err != nil {
					return err
				}
				pos = p
			}
		}
		return nil
	})
	return shape, err
}
