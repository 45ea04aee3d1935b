package tensor

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func TestSafetensorsRoundTrip(t *testing.T) {
	tests := []struct {
		name  string
		specs []Span
		meta  map[string]string
	}{
		{
			name: "float32 tensors with metadata",
			specs: []Span{
				{Name: "fc.weight", DType: F32, Shape: []int64{2, 3}},
				{Name: "fc.bias", DType: F32, Shape: []int64{2}},
			},
			meta: map[string]string{"format": "pt", "note": "a<b & c"},
		},
		{
			name: "every dtype, scalars and empty tensors",
			specs: []Span{
				{Name: "f64", DType: "F64", Shape: []int64{3}},
				{Name: "scalar", DType: F32, Shape: []int64{}},
				{Name: "nil shape", DType: F32},
				{Name: "f16", DType: "F16", Shape: []int64{1, 3}},
				{Name: "bf16", DType: "BF16", Shape: []int64{5}},
				{Name: "empty", DType: F32, Shape: []int64{0, 7}},
				{Name: "i64", DType: "I64", Shape: []int64{2}},
				{Name: "i32", DType: "I32", Shape: []int64{2}},
				{Name: "i16", DType: "I16", Shape: []int64{3}},
				{Name: "i8", DType: "I8", Shape: []int64{7}},
				{Name: "u8", DType: "U8", Shape: []int64{1}},
				{Name: "bool", DType: "BOOL", Shape: []int64{2, 2}},
			},
		},
		{name: "no tensors"},
		{
			name:  "odd names",
			specs: []Span{{Name: `quote"back\slash/ünï`, DType: F32, Shape: []int64{1}}, {Name: "\u2028", DType: "U8", Shape: []int64{1}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var data [][]byte
			want := map[string][]byte{}
			for i, s := range tt.specs {
				size, err := byteSize(s.DType, s.Shape)
				if err != nil {
					t.Fatal(err)
				}
				d := make([]byte, size)
				for j := range d {
					d[j] = byte(i*31 + j)
				}
				data = append(data, d)
				want[s.Name] = d
			}
			file := mustSafetensors(t, tt.specs, data, tt.meta)
			if got, want := int64(len(file)), SafetensorsSize(tt.specs, tt.meta); got != want {
				t.Errorf("file size: got %v, want SafetensorsSize %v", got, want)
			}
			x, meta, err := ReadSafetensors(bytes.NewReader(file), int64(len(file)))
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(meta, tt.meta) {
				t.Errorf("metadata: got %v, want %v", meta, tt.meta)
			}
			if got, want := len(x.Tensors), len(tt.specs); got != want {
				t.Fatalf("tensors: got %v, want %v", got, want)
			}
			if !slices.IsSortedFunc(x.Tensors, func(a, b Span) int { return strings.Compare(a.Name, b.Name) }) {
				t.Errorf("tensors not sorted by name: %v", x.Tensors)
			}
			for _, s := range tt.specs {
				got, ok := x.Lookup(s.Name)
				if !ok {
					t.Fatalf("tensor %q missing", s.Name)
				}
				wantShape := s.Shape
				if wantShape == nil {
					wantShape = []int64{}
				}
				if got.DType != s.DType || !reflect.DeepEqual(got.Shape, wantShape) || got.Size != int64(len(want[s.Name])) {
					t.Errorf("tensor %q: got %v, want dtype %v shape %v size %v", s.Name, got, s.DType, wantShape, len(want[s.Name]))
				}
				if b := sectionBytes(t, x, got); !bytes.Equal(b, want[s.Name]) {
					t.Errorf("tensor %q data: got %v, want %v", s.Name, b, want[s.Name])
				}
			}
		})
	}
}

func TestSafetensorsFloat32Values(t *testing.T) {
	vals := map[string][]float32{"w": {1, -2, 3.5, 0, 1e-30, 7}, "b": {42}, "s": {-1}}
	shapes := map[string][]int64{"w": {2, 3}, "s": {}}
	x := mustFloat32Index(t, vals, shapes)
	for name, want := range vals {
		got, err := x.Float32s(name)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got, want) {
			t.Errorf("tensor %q: got %v, want %v", name, got, want)
		}
	}
	if s, _ := x.Lookup("b"); !slices.Equal(s.Shape, []int64{1}) {
		t.Errorf("default shape: got %v, want [1]", s.Shape)
	}
	if got, want := x.Params(), int64(8); got != want {
		t.Errorf("Params: got %v, want %v", got, want)
	}
	err := WriteFloat32Safetensors(io.Discard, vals, map[string][]int64{"w": {4}})
	if got, want := errString(err), `safetensors: tensor "w": 6 values, shape [4] needs 4`; got != want {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestSafetensorsHeaderPadding(t *testing.T) {
	for n := 1; n <= 16; n++ {
		name := strings.Repeat("x", n)
		specs := []Span{{Name: name, DType: "U8", Shape: []int64{3}}}
		file := mustSafetensors(t, specs, [][]byte{{1, 2, 3}}, nil)
		hlen := binary.LittleEndian.Uint64(file)
		if hlen%8 != 0 {
			t.Errorf("name of %d bytes: header length %v, want a multiple of 8", n, hlen)
		}
		header := string(file[8 : 8+hlen])
		trimmed := strings.TrimRight(header, " ")
		if !strings.HasSuffix(trimmed, "}") || len(header)-len(trimmed) >= 8 {
			t.Errorf("name of %d bytes: header %q, want JSON padded with fewer than 8 spaces", n, header)
		}
		if got, want := trimmed, `{"`+name+`":{"dtype":"U8","shape":[3],"data_offsets":[0,3]}}`; got != want {
			t.Errorf("got %v, want %v", got, want)
		}
	}
}

func TestSafetensorsHeaderDeterministic(t *testing.T) {
	specs := []Span{
		{Name: "z", DType: F32, Shape: []int64{1}},
		{Name: "a", DType: F32, Shape: []int64{}},
	}
	meta := map[string]string{"k2": "v", "k1": "v"}
	file := mustSafetensors(t, specs, [][]byte{f32le(1), f32le(2)}, meta)
	hlen := binary.LittleEndian.Uint64(file)
	got := strings.TrimRight(string(file[8:8+hlen]), " ")
	want := `{"__metadata__":{"k1":"v","k2":"v"},"a":{"dtype":"F32","shape":[],"data_offsets":[4,8]},"z":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`
	if got != want {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestSafetensorsWriterCounts(t *testing.T) {
	specs := []Span{{Name: "a", DType: F32, Shape: []int64{2}}, {Name: "b", DType: "U8", Shape: []int64{1}}}
	tests := []struct {
		name     string
		writes   [][]byte
		writeErr string
		closeErr string
	}{
		{name: "exact in pieces", writes: [][]byte{{1}, {2, 3, 4, 5}, {}, {6, 7, 8, 9}}},
		{name: "exact at once", writes: [][]byte{make([]byte, 9)}},
		{name: "too few", writes: [][]byte{make([]byte, 8)}, closeErr: "safetensors: wrote 8 data bytes, the header declares 9"},
		{name: "nothing", closeErr: "safetensors: wrote 0 data bytes, the header declares 9"},
		{name: "too many", writes: [][]byte{make([]byte, 5), make([]byte, 5)}, writeErr: "safetensors: 1 more bytes than the header declares"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sw, err := NewSafetensorsWriter(io.Discard, specs, nil)
			if err != nil {
				t.Fatal(err)
			}
			var werr error
			for _, w := range tt.writes {
				if _, err := sw.Write(w); err != nil {
					werr = err
					break
				}
			}
			if got := errString(werr); got != tt.writeErr {
				t.Errorf("write: got %v, want %v", got, tt.writeErr)
			}
			if werr != nil {
				return
			}
			if got := errString(sw.Close()); got != tt.closeErr {
				t.Errorf("close: got %v, want %v", got, tt.closeErr)
			}
		})
	}
}

func TestSafetensorsWriterRefuses(t *testing.T) {
	tests := []struct {
		name  string
		specs []Span
		meta  map[string]string
		want  string
	}{
		{name: "empty name", specs: []Span{{DType: F32}}, want: "safetensors: tensor with an empty name"},
		{name: "reserved name", specs: []Span{{Name: "__metadata__", DType: F32}}, want: `safetensors: "__metadata__" is reserved, not a tensor name`},
		{name: "duplicate", specs: []Span{{Name: "a", DType: F32}, {Name: "a", DType: F32}}, want: `safetensors: duplicate tensor "a"`},
		{name: "unknown dtype", specs: []Span{{Name: "a", DType: "F8"}}, want: `safetensors: tensor "a": unknown dtype "F8"`},
		{name: "negative dim", specs: []Span{{Name: "a", DType: F32, Shape: []int64{2, -1}}}, want: `safetensors: tensor "a": negative dimension in shape [2 -1]`},
		{name: "huge", specs: []Span{{Name: "a", DType: F32, Shape: []int64{1 << 62}}}, want: `safetensors: tensor "a": shape [4611686018427387904] is too large`},
		{name: "sum too large", specs: []Span{{Name: "a", DType: "U8", Shape: []int64{1 << 62}}, {Name: "b", DType: "U8", Shape: []int64{1 << 62}}}, want: "safetensors: tensors too large"},
		{name: "bad utf-8", specs: []Span{{Name: "a\xff", DType: F32}}, want: `safetensors: tensor "a\xff": name is not valid UTF-8`},
		{name: "bad metadata", meta: map[string]string{"k": "\xff"}, want: `safetensors: metadata "k" is not valid UTF-8`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewSafetensorsWriter(io.Discard, tt.specs, tt.meta)
			if got := errString(err); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
			if got := SafetensorsSize(tt.specs, tt.meta); got != -1 {
				t.Errorf("SafetensorsSize: got %v, want -1", got)
			}
		})
	}
}

// lyingFiles are safetensors files whose headers must be refused, with the
// error each must give (a prefix, where encoding/json words the rest). They
// also seed FuzzReadSafetensors.
var lyingFiles = []struct {
	name string
	file []byte
	want string
}{
	{"end beyond the data", withHeader(`{"w":{"dtype":"F32","shape":[100],"data_offsets":[0,400]}}`, 100),
		`safetensors: tensor "w": data_offsets [0 400] end beyond the file's 100 data bytes`},
	{"overlap", withHeader(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, 12),
		`safetensors: tensors "a" and "b" overlap`},
	{"same range", withHeader(`{"b":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}`, 4),
		`safetensors: tensors "a" and "b" overlap`},
	{"inside another", withHeader(`{"big":{"dtype":"U8","shape":[10],"data_offsets":[0,10]},"small":{"dtype":"U8","shape":[2],"data_offsets":[3,5]}}`, 10),
		`safetensors: tensors "big" and "small" overlap`},
	{"header larger than the file", rawSafetensors(1<<31, `{}`, 10),
		"safetensors: header size 2147483648 larger than the file"},
	{"header size near 2^64", rawSafetensors(1<<64-1, `{}`, 10),
		"safetensors: header size 18446744073709551615 larger than the file"},
	{"header one byte too long", rawSafetensors(3, `{}`, 0),
		"safetensors: header size 3 larger than the file"},
	{"short file", []byte{1, 0, 0},
		"safetensors: file of 3 bytes is too short for the 8-byte header size"},
	{"shape does not match span", withHeader(`{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, 8),
		`safetensors: tensor "w": data_offsets [0 8] hold 8 bytes, shape [3] of F32 needs 12`},
	{"unknown dtype", withHeader(`{"w":{"dtype":"F31","shape":[1],"data_offsets":[0,4]}}`, 4),
		`safetensors: tensor "w": unknown dtype "F31"`},
	{"lowercase dtype", withHeader(`{"w":{"dtype":"f32","shape":[1],"data_offsets":[0,4]}}`, 4),
		`safetensors: tensor "w": unknown dtype "f32"`},
	{"negative dim", withHeader(`{"w":{"dtype":"F32","shape":[-1,-4],"data_offsets":[0,16]}}`, 16),
		`safetensors: tensor "w": negative dimension in shape [-1 -4]`},
	{"overflowing shape", withHeader(`{"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}}`, 0),
		`safetensors: tensor "w": shape [4294967296 4294967296] is too large`},
	{"overflow by dtype", withHeader(`{"w":{"dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,0]}}`, 0),
		`safetensors: tensor "w": shape [4611686018427387904] is too large`},
	{"reversed offsets", withHeader(`{"w":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}}`, 4),
		`safetensors: tensor "w": data_offsets [4 0] are not a range`},
	{"negative offsets", withHeader(`{"w":{"dtype":"U8","shape":[4],"data_offsets":[-4,0]}}`, 4),
		`safetensors: tensor "w": data_offsets [-4 0] are not a range`},
	{"three offsets", withHeader(`{"w":{"dtype":"U8","shape":[4],"data_offsets":[0,4,8]}}`, 8),
		`safetensors: tensor "w": data_offsets [0 4 8] is not [begin, end]`},
	{"no dtype", withHeader(`{"w":{"shape":[4],"data_offsets":[0,4]}}`, 4), `safetensors: tensor "w": no dtype`},
	{"no shape", withHeader(`{"w":{"dtype":"U8","data_offsets":[0,4]}}`, 4), `safetensors: tensor "w": no shape`},
	{"null shape", withHeader(`{"w":{"dtype":"U8","shape":null,"data_offsets":[0,1]}}`, 4), `safetensors: tensor "w": no shape`},
	{"no offsets", withHeader(`{"w":{"dtype":"U8","shape":[4]}}`, 4), `safetensors: tensor "w": no data_offsets`},
	{"fractional dim", withHeader(`{"w":{"dtype":"U8","shape":[1.5],"data_offsets":[0,4]}}`, 4),
		`safetensors: tensor "w": json: cannot unmarshal number 1.5`},
	{"entry not an object", withHeader(`{"w":[1,2]}`, 4),
		`safetensors: tensor "w": json: cannot unmarshal array`},
	{"array header", withHeader(`[1,2]`, 0), "safetensors: header is not a JSON object"},
	{"string header", withHeader(`"{}"`, 0), "safetensors: header is not a JSON object"},
	{"null header", withHeader(`null`, 0), "safetensors: header is not a JSON object"},
	{"empty header", withHeader(``, 0), "safetensors: header is not a JSON object"},
	{"leading space", withHeader(` {}`, 0), "safetensors: header is not a JSON object"},
	{"unterminated", withHeader(`{"w":`, 0), "safetensors: header JSON: entry \"w\": unexpected EOF"},
	{"trailing data", withHeader(`{} {}`, 0), "safetensors: header JSON: data after the object"},
	{"duplicate names", withHeader(`{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}`, 2),
		`safetensors: duplicate entry "w"`},
	{"empty name", withHeader(`{"":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, 1), "safetensors: tensor with an empty name"},
	{"metadata not strings", withHeader(`{"__metadata__":{"k":1}}`, 0),
		"safetensors: __metadata__ must map strings to strings: json: cannot unmarshal number"},
	{"metadata an array", withHeader(`{"__metadata__":["k"]}`, 0),
		"safetensors: __metadata__ must map strings to strings: json: cannot unmarshal array"},
	{"invalid utf-8", withHeader("{\"\xff\":{}}", 0), "safetensors: header is not valid UTF-8"},
}

func TestReadSafetensorsRefusesLyingHeaders(t *testing.T) {
	for _, tt := range lyingFiles {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := ReadSafetensors(bytes.NewReader(tt.file), int64(len(tt.file)))
			if got := errString(err); err == nil || !strings.HasPrefix(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

// sparseFile claims a size it does not have; only its prefix reads, so a
// reader that allocated by the header's word before checking would be
// caught reading (or allocating) what is not there.
type sparseFile struct{ prefix []byte }

func (f sparseFile) ReadAt(p []byte, off int64) (int, error) {
	if off >= int64(len(f.prefix)) {
		return 0, errors.New("read beyond the prefix")
	}
	n := copy(p, f.prefix[off:])
	if n < len(p) {
		return n, errors.New("read beyond the prefix")
	}
	return n, nil
}

func TestReadSafetensorsHeaderLimit(t *testing.T) {
	f := sparseFile{prefix: binary.LittleEndian.AppendUint64(nil, MaxHeaderSize+1)}
	_, _, err := ReadSafetensors(f, 1<<40)
	if got, want := errString(err), "safetensors: header size 104857601 exceeds the limit of 104857600"; got != want {
		t.Errorf("got %v, want %v", got, want)
	}
	// A file that is shorter than it claims is an error, not a panic.
	file := withHeader(`{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, 1)
	_, _, err = ReadSafetensors(bytes.NewReader(file[:20]), int64(len(file)))
	if got, want := errString(err), "safetensors: read header: unexpected EOF"; got != want {
		t.Errorf("got %v, want %v", got, want)
	}
}

func TestReadSafetensorsAccepts(t *testing.T) {
	tests := []struct {
		name    string
		header  string
		dataLen int
		want    []Span // Offsets relative to the data
	}{
		{"gaps and trailing bytes", `{"a":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}}`, 10,
			[]Span{{Name: "a", DType: "U8", Shape: []int64{2}, Offset: 4, Size: 2}}},
		{"empty tensors anywhere", `{"a":{"dtype":"U8","shape":[0],"data_offsets":[1,1]},"b":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}}`, 2,
			[]Span{{Name: "a", DType: "U8", Shape: []int64{0}, Offset: 1}, {Name: "b", DType: "U8", Shape: []int64{2}, Size: 2}}},
		{"unpadded, unknown fields ignored", `{"a":{"dtype":"BOOL","shape":[],"data_offsets":[0,1],"extra":true}}`, 1,
			[]Span{{Name: "a", DType: "BOOL", Shape: []int64{}, Size: 1}}},
		{"null metadata", `{"__metadata__":null}`, 0, nil},
		{"empty object", `{}`, 0, nil},
		{"whitespace", "{ \"a\" :\n{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]} }\t ", 1,
			[]Span{{Name: "a", DType: "U8", Shape: []int64{1}, Size: 1}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := withHeader(tt.header, tt.dataLen)
			x, _, err := ReadSafetensors(bytes.NewReader(file), int64(len(file)))
			if err != nil {
				t.Fatal(err)
			}
			want := slices.Clone(tt.want)
			for i := range want {
				want[i].Offset += int64(8 + len(tt.header))
			}
			if len(x.Tensors) != 0 || len(want) != 0 {
				if !reflect.DeepEqual(x.Tensors, want) {
					t.Errorf("got %v, want %v", x.Tensors, want)
				}
			}
		})
	}
}

func TestOpenSafetensors(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "model.safetensors")
	var buf bytes.Buffer
	if err := WriteFloat32Safetensors(&buf, map[string][]float32{"w": {1, 2}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	x, f, err := OpenSafetensors(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := x.Float32s("w")
	if err != nil || !slices.Equal(got, []float32{1, 2}) {
		t.Errorf("got %v, %v, want [1 2]", got, err)
	}

	bad := filepath.Join(dir, "bad.safetensors")
	if err := os.WriteFile(bad, []byte("not a model"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err = OpenSafetensors(bad)
	n := binary.LittleEndian.Uint64([]byte("not a mo"))
	if got, want := errString(err), fmt.Sprintf("%s: safetensors: header size %d larger than the file", bad, n); got != want {
		t.Errorf("got %v, want %v", got, want)
	}
	if _, _, err := OpenSafetensors(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("got %v, want not exist", err)
	}
}

func FuzzReadSafetensors(f *testing.F) {
	for _, tt := range lyingFiles {
		f.Add(tt.file)
	}
	f.Add(withHeader(`{"a":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}}`, 10))
	f.Add(mustSafetensors(f, []Span{
		{Name: "w", DType: F32, Shape: []int64{2, 2}},
		{Name: "s", DType: "I64", Shape: []int64{}},
		{Name: "e", DType: "BF16", Shape: []int64{0}},
	}, [][]byte{f32le(1, 2, 3, 4), make([]byte, 8)}, map[string]string{"format": "pt"}))
	f.Fuzz(func(t *testing.T, file []byte) {
		x, meta, err := ReadSafetensors(bytes.NewReader(file), int64(len(file)))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "safetensors: ") {
				t.Errorf("error %q lacks the safetensors: prefix", err)
			}
			return
		}
		// Whatever is accepted can be written again, and reads back the same.
		var data [][]byte
		for _, s := range x.Tensors {
			data = append(data, sectionBytes(t, x, s))
		}
		again := mustSafetensors(t, x.Tensors, data, meta)
		y, meta2, err := ReadSafetensors(bytes.NewReader(again), int64(len(again)))
		if err != nil {
			t.Fatalf("re-written file refused: %v", err)
		}
		if got, want := withoutOffsets(y.Tensors), withoutOffsets(x.Tensors); !reflect.DeepEqual(got, want) {
			t.Fatalf("spans: got %v, want %v", got, want)
		}
		if len(meta) > 0 && !maps.Equal(meta2, meta) {
			t.Fatalf("metadata: got %v, want %v", meta2, meta)
		}
		for i, s := range y.Tensors {
			if got := sectionBytes(t, y, s); !bytes.Equal(got, data[i]) {
				t.Fatalf("tensor %q: got %v, want %v", s.Name, got, data[i])
			}
		}
	})
}

// errString is err's message, or "" for nil, so that tables can say "no
// error" with an empty string.
func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
