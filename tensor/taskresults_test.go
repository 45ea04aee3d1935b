package tensor

import (
	"bytes"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/fedplane/fedplane/api/aggregatorpb"
	"github.com/fedplane/fedplane/api/basepb"
)

// testModel is a small model with the shapes that stress the encoding: a
// matrix, a scalar, an empty tensor (whose data_bytes proto3 omits) and a
// tensor over 16 KiB (a 3-byte length).
func testModel(tb testing.TB) *Index {
	tb.Helper()
	return mustFloat32Index(tb, map[string][]float32{
		"fc.weight": {1, 2, 3, 4, 5, 6},
		"fc.bias":   {-1, 0.5},
		"scale":     {3},
		"empty":     {},
		"big":       fill(5000, func(i int) float32 { return float32(i) / 7 }),
	}, map[string][]int64{"fc.weight": {2, 3}, "scale": {}, "empty": {0, 3}, "big": {50, 100}})
}

// protoTaskResults is the message WriteTaskResults encodes, built the
// ordinary way.
func protoTaskResults(tb testing.TB, h TaskResultsHeader, model *Index, metrics []Metric) *aggregatorpb.TaskResults {
	tb.Helper()
	m := &aggregatorpb.TaskResults{
		Header: &aggregatorpb.MessageHeader{
			Sender:                  h.Sender,
			Receiver:                h.Receiver,
			FederationUuid:          h.FederationUUID,
			SingleColCertCommonName: h.CommonName,
		},
		RoundNumber: h.Round,
		TaskName:    h.TaskName,
		DataSize:    h.DataSize,
	}
	if model != nil {
		for _, s := range model.Tensors {
			m.Tensors = append(m.Tensors, NamedTensor(s, sectionBytes(tb, model, s), []string{"trained"}, false))
		}
	}
	for _, mt := range metrics {
		m.Tensors = append(m.Tensors, NamedTensor(Span{Name: mt.Name, DType: F32}, f32le(mt.Value), []string{"metric"}, true))
	}
	return m
}

func mustMarshal(tb testing.TB, m proto.Message) []byte {
	tb.Helper()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

var (
	testHeader = TaskResultsHeader{
		Sender: "envoy-1", Receiver: "director", FederationUUID: "6f1c2a7e-0000-4000-8000-000000000001",
		CommonName: "envoy-1", Round: 3, TaskName: "train", DataSize: 1200,
	}
	testMetrics = []Metric{{Name: "train_loss", Value: 0.25}, {Name: "acc", Value: float32(math.NaN())}, {Name: "n_samples", Value: 1200}}
)

func TestWriteTaskResultsMatchesProto(t *testing.T) {
	long := strings.Repeat("n", 300)
	tests := []struct {
		name    string
		h       TaskResultsHeader
		model   *Index
		metrics []Metric
	}{
		{"full", testHeader, testModel(t), testMetrics},
		{"zero header", TaskResultsHeader{}, testModel(t), nil},
		{"negative numbers", TaskResultsHeader{Round: -1, DataSize: math.MinInt32}, testModel(t), nil},
		{"metrics only", testHeader, mustFloat32Index(t, nil, nil), testMetrics},
		{"nil model", testHeader, nil, testMetrics},
		{"long names", TaskResultsHeader{Sender: long, TaskName: long}, mustFloat32Index(t, map[string][]float32{long: {1}}, nil), []Metric{{Name: long + "m"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			n, err := WriteTaskResults(&buf, tt.h, tt.model, tt.metrics)
			if err != nil {
				t.Fatal(err)
			}
			want := mustMarshal(t, protoTaskResults(t, tt.h, tt.model, tt.metrics))
			if got := buf.Bytes(); !bytes.Equal(got, want) {
				t.Errorf("got %d bytes %x..., want proto.Marshal's %d bytes %x...", len(got), got[:min(len(got), 64)], len(want), want[:min(len(want), 64)])
			}
			if n != int64(len(want)) {
				t.Errorf("returned n: got %v, want %v", n, len(want))
			}
		})
	}
}

func TestWriteTaskResultsRefuses(t *testing.T) {
	model := testModel(t)
	mixed := mustSafetensors(t, []Span{{Name: "d", DType: "F64", Shape: []int64{1}}}, [][]byte{make([]byte, 8)}, nil)
	mixedX, _, err := ReadSafetensors(bytes.NewReader(mixed), int64(len(mixed)))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		h       TaskResultsHeader
		model   *Index
		metrics []Metric
		want    string
	}{
		{"not F32", TaskResultsHeader{}, mixedX, nil, `task results: tensor "d": dtype F64, the wire carries only F32`},
		{"dim beyond int32", TaskResultsHeader{}, &Index{Tensors: []Span{{Name: "big", DType: F32, Shape: []int64{1 << 31}, Size: 1 << 33}}}, nil,
			`task results: tensor "big": dimension 2147483648 of shape [2147483648] does not fit the wire's int32`},
		{"too many dims", TaskResultsHeader{}, &Index{Tensors: []Span{{Name: "deep", DType: F32, Shape: make([]int64, 33)}}}, nil,
			`task results: tensor "deep": 33 dimensions exceed the limit of 32`},
		{"size mismatch", TaskResultsHeader{}, &Index{Tensors: []Span{{Name: "w", DType: F32, Shape: []int64{2}, Size: 4}}}, nil,
			`task results: tensor "w": data_bytes has 4 bytes, shape [2] needs 8`},
		{"duplicate tensor", TaskResultsHeader{}, &Index{Tensors: []Span{{Name: "w", DType: F32, Size: 4}, {Name: "w", DType: F32, Size: 4}}}, nil,
			`task results: duplicate tensor "w"`},
		{"duplicate metric", TaskResultsHeader{}, model, []Metric{{Name: "loss"}, {Name: "loss"}}, `task results: duplicate metric "loss"`},
		{"unnamed metric", TaskResultsHeader{}, model, []Metric{{}}, "task results: metric: tensor with an empty name"},
		{"long name", TaskResultsHeader{}, model, []Metric{{Name: strings.Repeat("x", MaxNameLen+1)}},
			"task results: metric: tensor name of 1025 bytes exceeds the limit of 1024"},
		{"bad utf-8", TaskResultsHeader{Sender: "\xff"}, model, nil, `task results: header field "\xff" is not valid UTF-8`},
		{"short file", TaskResultsHeader{}, &Index{R: bytes.NewReader(make([]byte, 6)), Tensors: []Span{{Name: "w", DType: F32, Shape: []int64{2}, Size: 8}}}, nil,
			`task results: tensor "w": EOF`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := WriteTaskResults(io.Discard, tt.h, tt.model, tt.metrics)
			if got := errString(err); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// unknownFields has one unknown field of every wire type, a nested group
// among them.
func unknownFields() []byte {
	var b []byte
	b = protowire.AppendTag(b, 100, protowire.VarintType)
	b = protowire.AppendVarint(b, 1<<40)
	b = protowire.AppendTag(b, 101, protowire.Fixed32Type)
	b = protowire.AppendFixed32(b, 7)
	b = protowire.AppendTag(b, 102, protowire.Fixed64Type)
	b = protowire.AppendFixed64(b, 8)
	b = protowire.AppendTag(b, 103, protowire.BytesType)
	b = protowire.AppendString(b, "junk")
	b = protowire.AppendTag(b, 104, protowire.StartGroupType)
	b = protowire.AppendTag(b, 1, protowire.VarintType)
	b = protowire.AppendVarint(b, 5)
	b = protowire.AppendTag(b, 105, protowire.StartGroupType)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendString(b, "x")
	b = protowire.AppendTag(b, 105, protowire.EndGroupType)
	b = protowire.AppendTag(b, 104, protowire.EndGroupType)
	return b
}

// withUnknown adds unknownFields to every message of m, and a data_bytes
// field of the wrong wire type to each tensor, which parsers must skip.
func withUnknown(m *aggregatorpb.TaskResults) *aggregatorpb.TaskResults {
	m = proto.Clone(m).(*aggregatorpb.TaskResults)
	m.ProtoReflect().SetUnknown(protoreflect.RawFields(unknownFields()))
	m.Header.ProtoReflect().SetUnknown(protoreflect.RawFields(unknownFields()))
	for _, nt := range m.Tensors {
		u := unknownFields()
		u = protowire.AppendTag(u, 7, protowire.VarintType)
		u = protowire.AppendVarint(u, 3)
		nt.ProtoReflect().SetUnknown(protoreflect.RawFields(u))
		for _, md := range nt.TransformerMetadata {
			md.ProtoReflect().SetUnknown(protoreflect.RawFields(unknownFields()))
		}
	}
	return m
}

// reorder re-encodes the message b with its fields in reverse order,
// applying nested[num] to the payload of length-delimited field num first.
func reorder(tb testing.TB, b []byte, nested map[protowire.Number]func([]byte) []byte) []byte {
	tb.Helper()
	var fields [][]byte
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeField(b)
		if n < 0 {
			tb.Fatal(protowire.ParseError(n))
		}
		f := b[:n]
		if fn, ok := nested[num]; ok && typ == protowire.BytesType {
			_, _, tl := protowire.ConsumeTag(f)
			payload, _ := protowire.ConsumeBytes(f[tl:])
			f = protowire.AppendTag(nil, num, typ)
			f = protowire.AppendBytes(f, fn(payload))
		}
		fields = append(fields, f)
		b = b[n:]
	}
	var out []byte
	for i := len(fields) - 1; i >= 0; i-- {
		out = append(out, fields[i]...)
	}
	return out
}

// unpack rewrites a MetadataProto's packed int_list as one varint field per
// element, the encoding proto2 writers use.
func unpack(tb testing.TB, b []byte) []byte {
	var out []byte
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeField(b)
		if num == 2 && typ == protowire.BytesType {
			_, _, tl := protowire.ConsumeTag(b)
			packed, _ := protowire.ConsumeBytes(b[tl:])
			for len(packed) > 0 {
				v, vn := protowire.ConsumeVarint(packed)
				out = protowire.AppendTag(out, 2, protowire.VarintType)
				out = protowire.AppendVarint(out, v)
				packed = packed[vn:]
			}
		} else {
			out = append(out, b[:n]...)
		}
		b = b[n:]
	}
	return out
}

func TestReadTaskResults(t *testing.T) {
	model := testModel(t)
	msg := protoTaskResults(t, testHeader, model, testMetrics)
	plain := mustMarshal(t, msg)
	reversed := reorder(t, plain, map[protowire.Number]func([]byte) []byte{
		1: func(b []byte) []byte { return reorder(t, b, nil) },
		5: func(b []byte) []byte {
			return reorder(t, b, map[protowire.Number]func([]byte) []byte{6: func(b []byte) []byte { return unpack(t, b) }})
		},
	})
	// The header twice, split: proto merges the two.
	split := slices.Concat(
		mustMarshal(t, &aggregatorpb.TaskResults{Header: &aggregatorpb.MessageHeader{Sender: "old", Receiver: testHeader.Receiver}}),
		plain,
		mustMarshal(t, &aggregatorpb.TaskResults{Header: &aggregatorpb.MessageHeader{}}))
	tests := []struct {
		name      string
		file      []byte
		anyOrder  bool
		wantEqual bool // proto.Unmarshal of file equals msg
	}{
		{"proto.Marshal", plain, false, true},
		{"unknown fields everywhere", mustMarshal(t, withUnknown(msg)), false, false},
		{"reversed fields, unpacked int_list", reversed, true, true},
		{"header split in two", split, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var back aggregatorpb.TaskResults
			if err := proto.Unmarshal(tt.file, &back); err != nil {
				t.Fatalf("the test's own encoding is invalid: %v", err)
			}
			if tt.wantEqual && !proto.Equal(&back, msg) && !tt.anyOrder {
				t.Fatalf("the test's own encoding decodes to %v, want %v", &back, msg)
			}
			tr, err := ReadTaskResults(bytes.NewReader(tt.file), int64(len(tt.file)))
			if err != nil {
				t.Fatal(err)
			}
			if tr.Header != testHeader {
				t.Errorf("header: got %+v, want %+v", tr.Header, testHeader)
			}
			if got, want := withoutOffsets(tr.Model.Tensors), withoutOffsets(model.Tensors); !reflect.DeepEqual(got, want) {
				t.Errorf("spans: got %v, want %v", got, want)
			}
			for _, s := range tr.Model.Tensors {
				want, _ := model.Lookup(s.Name)
				if got, want := sectionBytes(t, tr.Model, s), sectionBytes(t, model, want); !bytes.Equal(got, want) {
					t.Errorf("tensor %q data: got %x, want %x", s.Name, got, want)
				}
			}
			got, want := tr.Metrics, testMetrics
			if tt.anyOrder {
				got = slices.Clone(got)
				want = slices.Clone(want)
				byName := func(a, b Metric) int { return strings.Compare(a.Name, b.Name) }
				slices.SortFunc(got, byName)
				slices.SortFunc(want, byName)
			}
			if !sameMetrics(got, want) {
				t.Errorf("metrics: got %v, want %v", got, want)
			}
		})
	}
}

func sameMetrics(a, b []Metric) bool {
	return slices.EqualFunc(a, b, func(x, y Metric) bool {
		return x.Name == y.Name && math.Float32bits(x.Value) == math.Float32bits(y.Value)
	})
}

func TestReadTaskResultsMetricShapes(t *testing.T) {
	m := &aggregatorpb.TaskResults{Tensors: []*basepb.NamedTensor{
		{Name: "a", Report: true, TransformerMetadata: []*basepb.MetadataProto{{IntList: []int32{1}}}, DataBytes: f32le(1)},
		{Name: "b", Report: true, TransformerMetadata: []*basepb.MetadataProto{{IntList: []int32{1, 1}}}, DataBytes: f32le(2)},
		{Name: "c", Report: true, TransformerMetadata: []*basepb.MetadataProto{{}}, DataBytes: f32le(3)},
	}}
	b := mustMarshal(t, m)
	tr, err := ReadTaskResults(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	if want := []Metric{{"a", 1}, {"b", 2}, {"c", 3}}; !sameMetrics(tr.Metrics, want) {
		t.Errorf("got %v, want %v", tr.Metrics, want)
	}
	if len(tr.Model.Tensors) != 0 {
		t.Errorf("model: got %v, want no tensors", tr.Model.Tensors)
	}
}

// Builders for hand-made, mostly broken, encodings.
func tag(num protowire.Number, typ protowire.Type) []byte { return protowire.AppendTag(nil, num, typ) }

func bytesField(num protowire.Number, payload ...[]byte) []byte {
	return protowire.AppendBytes(tag(num, protowire.BytesType), slices.Concat(payload...))
}

func varintField(num protowire.Number, v uint64) []byte {
	return protowire.AppendVarint(tag(num, protowire.VarintType), v)
}

func dims(d ...int32) []byte {
	var packed []byte
	for _, v := range d {
		packed = protowire.AppendVarint(packed, uint64(int64(v)))
	}
	return bytesField(6, bytesField(2, packed))
}

// tensorField is a tensors field holding a NamedTensor made of fields.
func tensorField(fields ...[]byte) []byte { return bytesField(5, fields...) }

func name(s string) []byte { return bytesField(1, []byte(s)) }

func data(n int) []byte { return bytesField(7, make([]byte, n)) }

var report = varintField(4, 1)

// brokenTaskResults are encodings ReadTaskResults must refuse, with (part
// of) the error each must give. They also seed FuzzReadTaskResults.
var brokenTaskResults = []struct {
	name string
	file []byte
	want string
}{
	{"garbage", bytes.Repeat([]byte{0xff}, 12), "task results: varint at byte 0 overflows 64 bits"},
	{"field number 0", []byte{0x02, 0x00}, "task results: invalid field number 0 at byte 0"},
	{"wire type 6", []byte{0x0e, 0x00}, "task results: field 1 at byte 0: invalid wire type 6"},
	{"truncated varint", []byte{0x10, 0x80}, "task results: varint at byte 1: unexpected EOF"},
	{"truncated tag", []byte{0x80}, "task results: varint at byte 0: unexpected EOF"},
	{"truncated fixed64", slices.Concat(tag(9, protowire.Fixed64Type), []byte{1, 2, 3}), "task results: field 9 at byte 0 is truncated"},
	{"truncated fixed32", slices.Concat(tag(9, protowire.Fixed32Type), []byte{1, 2, 3}), "task results: field 9 at byte 0 is truncated"},
	{"length beyond the file", slices.Concat(tag(5, protowire.BytesType), protowire.AppendVarint(nil, 1<<62)),
		"task results: field 5 at byte 0: length 4611686018427387904 runs beyond the end of the file (byte 10)"},
	{"truncated in the data", tensorField(name("w"), dims(4), data(16))[:20],
		"task results: field 5 at byte 0: length 26 runs beyond the end of the file (byte 20)"},
	{"length beyond the tensor", slices.Concat(tensorField(name("w"), dims(4), tag(7, protowire.BytesType), []byte{17}, make([]byte, 16)), bytesField(3, []byte("train"))),
		`task results: tensor "w": field 7 at byte 10: length 17 runs beyond the end of its message (byte 28)`},
	{"length beyond the metadata", tensorField(name("w"), bytesField(6, tag(2, protowire.BytesType), []byte{9, 1}), data(4)),
		`task results: tensor "w": field 2 at byte 7: length 9 runs beyond the end of its message (byte 10)`},
	{"end group without start", tag(5, protowire.EndGroupType), "task results: end of group 5 at byte 0 without a start"},
	{"unclosed group", slices.Concat(tag(9, protowire.StartGroupType), varintField(1, 1)), "task results: group 9 is not closed before byte 3"},
	{"mismatched group", slices.Concat(tag(9, protowire.StartGroupType), tag(8, protowire.EndGroupType)), "task results: end of group 8 at byte 1 closes group 9"},
	{"groups too deep", bytes.Repeat(tag(9, protowire.StartGroupType), 100), "task results: groups nested deeper than 64 at byte 65"},
	{"duplicate tensor", slices.Concat(tensorField(name("w"), dims(1), data(4)), tensorField(name("w"), dims(), data(4))),
		`task results: duplicate tensor "w"`},
	{"duplicate metric", slices.Concat(tensorField(name("m"), report, dims(), data(4)), tensorField(name("m"), report, dims(), data(4))),
		`task results: duplicate metric "m"`},
	{"data does not match the shape", tensorField(name("w"), dims(2, 2), data(12)),
		`task results: tensor "w": data_bytes has 12 bytes, shape [2 2] needs 16`},
	{"no data", tensorField(name("w"), dims(2)),
		`task results: tensor "w": data_bytes has 0 bytes, shape [2] needs 8`},
	{"metric not a scalar", tensorField(name("acc"), report, dims(2), data(8)),
		`task results: metric "acc": not a scalar float32 (shape [2], 8 data bytes)`},
	{"metric of 8 bytes", tensorField(name("acc"), report, dims(), data(8)),
		`task results: metric "acc": not a scalar float32 (shape [], 8 data bytes)`},
	{"no name", tensorField(dims(1), data(4)), "task results: tensor #0 at byte 0 has no name"},
	{"no metadata", tensorField(name("w"), data(4)), `task results: tensor "w": no transformer_metadata, so no shape`},
	{"name too long", tensorField(name(strings.Repeat("x", MaxNameLen+1))),
		"task results: tensor #0 at byte 0: name at byte 3: 1025 bytes exceed the limit of 1024"},
	{"name not utf-8", tensorField(name("\xffw")), "task results: tensor #0 at byte 0: name at byte 2 is not valid UTF-8"},
	{"too many tags", tensorField(name("w"), bytes.Repeat(bytesField(5, []byte("t")), MaxTags+1)), `task results: tensor "w": more than 64 tags`},
	{"tag too long", tensorField(name("w"), bytesField(5, make([]byte, MaxNameLen+1))), `task results: tensor "w": tag at byte 6: 1025 bytes exceed the limit of 1024`},
	{"tag not utf-8", tensorField(name("w"), bytesField(5, []byte{0xff})), `task results: tensor "w": tag at byte 5 is not valid UTF-8`},
	{"broken second metadata", tensorField(name("w"), dims(1), bytesField(6, tag(3, protowire.BytesType), []byte{1, 0x80}), data(4)),
		`task results: tensor "w": varint at byte 14: unexpected EOF`},
	{"broken map entry", tensorField(name("w"), bytesField(6, bytesField(1, []byte{0x0f})), data(4)),
		`task results: tensor "w": field 1 at byte 9: invalid wire type 7`},
	{"too many dims", tensorField(name("w"), dims(make([]int32, MaxDims+1)...)), `task results: tensor "w": shape with more than 32 dimensions`},
	{"too many unpacked dims", tensorField(name("w"), bytesField(6, bytes.Repeat(varintField(2, 1), MaxDims+1))), `task results: tensor "w": shape with more than 32 dimensions`},
	{"negative dim", tensorField(name("w"), dims(2, -1), data(8)), `task results: tensor "w": negative dimension -1`},
	{"too many metadata", tensorField(name("w"), bytes.Repeat(dims(), maxMetadata+1)), `task results: tensor "w": more than 64 transformer_metadata`},
	{"header string too long", bytesField(1, bytesField(1, make([]byte, 2000))),
		"task results: header sender at byte 3: 2000 bytes exceed the limit of 1024"},
	{"task name not utf-8", bytesField(3, []byte{0xc0}), "task results: task_name at byte 0 is not valid UTF-8"},
}

func TestReadTaskResultsRefuses(t *testing.T) {
	for _, tt := range brokenTaskResults {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReadTaskResults(bytes.NewReader(tt.file), int64(len(tt.file)))
			if got := errString(err); err == nil || !strings.HasPrefix(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
	t.Run("empty", func(t *testing.T) {
		if _, err := ReadTaskResults(bytes.NewReader(nil), 0); !errors.Is(err, ErrEmptyTaskResults) {
			t.Errorf("got %v, want %v", err, ErrEmptyTaskResults)
		}
	})
	t.Run("file shorter than its size", func(t *testing.T) {
		b := mustMarshal(t, protoTaskResults(t, testHeader, testModel(t), nil))
		_, err := ReadTaskResults(bytes.NewReader(b[:100]), int64(len(b)))
		if got, want := errString(err), "task results: read at byte 0: unexpected EOF"; got != want {
			t.Errorf("got %v, want %v", got, want)
		}
	})
	t.Run("too many tensors", func(t *testing.T) {
		var b []byte
		for i := range MaxTensors + 1 {
			b = append(b, tensorField(name(strconv.Itoa(i)), dims(), data(4))...)
		}
		_, err := ReadTaskResults(bytes.NewReader(b), int64(len(b)))
		if got, want := errString(err), "task results: more than 131072 tensors"; got != want {
			t.Errorf("got %v, want %v", got, want)
		}
	})
}

// Every prefix of a valid encoding is either refused or a valid shorter
// message (cut between fields); none may panic.
func TestReadTaskResultsPrefixes(t *testing.T) {
	b := mustMarshal(t, withUnknown(protoTaskResults(t, testHeader, testModel(t), testMetrics)))
	for n := 1; n < len(b); n++ {
		tr, err := ReadTaskResults(bytes.NewReader(b[:n]), int64(n))
		if err != nil {
			continue
		}
		var back aggregatorpb.TaskResults
		if perr := proto.Unmarshal(b[:n], &back); perr != nil {
			t.Errorf("prefix %d: accepted, but proto.Unmarshal says %v", n, perr)
		}
		if got, want := len(tr.Model.Tensors)+len(tr.Metrics), len(back.Tensors); got != want {
			t.Errorf("prefix %d: got %v tensors, want %v", n, got, want)
		}
	}
}

type recorder struct {
	chunks []*basepb.DataStream
	fail   error
}

func (r *recorder) send(d *basepb.DataStream) error {
	if r.fail != nil {
		return r.fail
	}
	r.chunks = append(r.chunks, d)
	return nil
}

func TestChunkWriter(t *testing.T) {
	tests := []struct {
		name    string
		chunk   int
		limit   int
		total   int
		pieces  int // write in pieces of this size; 0 means io.Copy (ReadFrom)
		nchunks int
	}{
		{"one byte", 7, 7, 1, 1, 1},
		{"one short of a chunk", 7, 7, 6, 4, 1},
		{"exactly one chunk", 7, 7, 7, 3, 1},
		{"one over", 7, 7, 8, 5, 2},
		{"many in one write", 7, 7, 40, 40, 6},
		{"through ReadFrom", 7, 7, 40, 0, 6},
		{"default chunk", 0, 2 << 20, 5<<20 + 3, 1 << 20, 3},
		{"default chunk through ReadFrom", 0, 2 << 20, 4 << 20, 0, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := make([]byte, tt.total)
			for i := range in {
				in[i] = byte(i * 7)
			}
			var r recorder
			w := NewChunkWriter(r.send, tt.chunk)
			if tt.pieces == 0 {
				// A reader without WriteTo, so io.Copy uses ReadFrom.
				if n, err := io.Copy(w, struct{ io.Reader }{bytes.NewReader(in)}); err != nil || n != int64(tt.total) {
					t.Fatalf("io.Copy: got %v, %v, want %v, nil", n, err, tt.total)
				}
			} else {
				for p := in; len(p) > 0; {
					k := min(tt.pieces, len(p))
					if n, err := w.Write(p[:k]); err != nil || n != k {
						t.Fatalf("Write: got %v, %v, want %v, nil", n, err, k)
					}
					p = p[k:]
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			var got []byte
			for i, c := range r.chunks {
				if int(c.Size) != len(c.Npbytes) {
					t.Errorf("chunk %d: size %v, want len(npbytes) %v", i, c.Size, len(c.Npbytes))
				}
				if len(c.Npbytes) == 0 || len(c.Npbytes) > tt.limit {
					t.Errorf("chunk %d: %v bytes, want 1..%v", i, len(c.Npbytes), tt.limit)
				}
				got = append(got, c.Npbytes...)
			}
			if len(r.chunks) != tt.nchunks {
				t.Errorf("chunks: got %v, want %v", len(r.chunks), tt.nchunks)
			}
			if !bytes.Equal(got, in) {
				t.Errorf("concatenated chunks differ from the input")
			}
		})
	}
}

func TestChunkWriterErrors(t *testing.T) {
	t.Run("empty", func(t *testing.T) {
		var r recorder
		w := NewChunkWriter(r.send, 0)
		if _, err := w.Write(nil); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); !errors.Is(err, ErrEmptyTaskResults) {
			t.Errorf("got %v, want %v", err, ErrEmptyTaskResults)
		}
		if len(r.chunks) != 0 {
			t.Errorf("got %v chunks, want 0", len(r.chunks))
		}
	})
	t.Run("send fails", func(t *testing.T) {
		boom := errors.New("stream broken")
		r := recorder{fail: boom}
		w := NewChunkWriter(r.send, 4)
		if _, err := w.Write(make([]byte, 4)); err != nil {
			t.Fatalf("first chunk is only buffered: got %v, want nil", err)
		}
		if _, err := w.Write(make([]byte, 1)); !errors.Is(err, boom) {
			t.Errorf("got %v, want %v", err, boom)
		}
		if err := w.Close(); !errors.Is(err, boom) {
			t.Errorf("close: got %v, want %v", err, boom)
		}
	})
	t.Run("write after close", func(t *testing.T) {
		var r recorder
		w := NewChunkWriter(r.send, 4)
		w.Write([]byte{1})
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte{2}); err == nil {
			t.Errorf("got nil, want an error")
		}
		if len(r.chunks) != 1 {
			t.Errorf("got %v chunks, want 1", len(r.chunks))
		}
	})
}

// TestTaskResultsThroughChunks is the envoy-to-director path: encode,
// chunk, store the npbytes in a file, index it, average it.
func TestTaskResultsThroughChunks(t *testing.T) {
	model := testModel(t)
	var r recorder
	cw := NewChunkWriter(r.send, 1000)
	n, err := WriteTaskResults(cw, testHeader, model, testMetrics)
	if err != nil {
		t.Fatal(err)
	}
	if err := cw.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "results")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, c := range r.chunks {
		if _, err := f.Write(c.Npbytes); err != nil {
			t.Fatal(err)
		}
	}
	tr, err := ReadTaskResults(f, n)
	if err != nil {
		t.Fatal(err)
	}
	if want := mustMarshal(t, protoTaskResults(t, testHeader, model, testMetrics)); int64(len(want)) != n {
		t.Errorf("size: got %v, want %v", n, len(want))
	}
	var out bytes.Buffer
	if err := FedAvg(&out, model, []Input{{X: tr.Model, Weight: float64(tr.Header.DataSize)}}); err != nil {
		t.Fatal(err)
	}
	avg, _, err := ReadSafetensors(bytes.NewReader(out.Bytes()), int64(out.Len()))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range model.Tensors {
		got, _ := avg.Float32s(s.Name)
		want, _ := model.Float32s(s.Name)
		if !slices.Equal(got, want) {
			t.Errorf("tensor %q: got %v, want %v", s.Name, got, want)
		}
	}
}

func FuzzReadTaskResults(f *testing.F) {
	// Small seeds: the fuzzer minimizes every new input it finds, and a
	// large one stalls it for a minute.
	small := mustFloat32Index(f, map[string][]float32{"w": {1, 2}, "s": {3}, "e": {}}, map[string][]int64{"s": {}, "e": {2, 0}})
	msg := protoTaskResults(f, testHeader, small, testMetrics)
	f.Add(mustMarshal(f, msg))
	f.Add(mustMarshal(f, withUnknown(msg)))
	f.Add(mustMarshal(f, protoTaskResults(f, TaskResultsHeader{}, small, nil)))
	for _, tt := range brokenTaskResults {
		if len(tt.file) < 2048 {
			f.Add(tt.file)
		}
	}
	f.Fuzz(func(t *testing.T, file []byte) {
		tr, err := ReadTaskResults(bytes.NewReader(file), int64(len(file)))
		if err != nil {
			if !errors.Is(err, ErrEmptyTaskResults) && !strings.HasPrefix(err.Error(), "task results: ") {
				t.Errorf("error %q lacks the task results: prefix", err)
			}
			return
		}
		// What was accepted encodes again, and decodes to the same.
		var buf bytes.Buffer
		if _, err := WriteTaskResults(&buf, tr.Header, tr.Model, tr.Metrics); err != nil {
			t.Fatalf("re-encoding refused: %v", err)
		}
		again, err := ReadTaskResults(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
		if err != nil {
			t.Fatalf("re-encoded results refused: %v", err)
		}
		if again.Header != tr.Header {
			t.Fatalf("header: got %+v, want %+v", again.Header, tr.Header)
		}
		if got, want := withoutOffsets(again.Model.Tensors), withoutOffsets(tr.Model.Tensors); !reflect.DeepEqual(got, want) {
			t.Fatalf("spans: got %v, want %v", got, want)
		}
		for i, s := range again.Model.Tensors {
			if got, want := sectionBytes(t, again.Model, s), sectionBytes(t, tr.Model, tr.Model.Tensors[i]); !bytes.Equal(got, want) {
				t.Fatalf("tensor %q: got %x, want %x", s.Name, got, want)
			}
		}
		if !sameMetrics(again.Metrics, tr.Metrics) {
			t.Fatalf("metrics: got %v, want %v", again.Metrics, tr.Metrics)
		}
		// And proto agrees that it was a TaskResults.
		var back aggregatorpb.TaskResults
		if err := proto.Unmarshal(file, &back); err != nil {
			t.Fatalf("accepted, but proto.Unmarshal says %v", err)
		}
	})
}
