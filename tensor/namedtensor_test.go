package tensor

import (
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/fedplane/fedplane/api/basepb"
)

func TestNamedTensorRoundTrip(t *testing.T) {
	tests := []struct {
		name   string
		span   Span
		data   []byte
		tags   []string
		report bool
	}{
		{"matrix", Span{Name: "fc.weight", DType: F32, Shape: []int64{2, 3}, Size: 24}, f32le(1, 2, 3, 4, 5, 6), nil, false},
		{"scalar metric", Span{Name: "acc", DType: F32, Shape: []int64{}, Size: 4}, f32le(0.9), []string{"metric"}, true},
		{"nil shape", Span{Name: "s", DType: F32, Size: 4}, f32le(1), []string{}, false},
		{"empty", Span{Name: "e", DType: F32, Shape: []int64{0, 4}}, nil, []string{"trained", "envoy-1"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nt := NamedTensor(tt.span, tt.data, tt.tags, tt.report)
			wire, err := proto.Marshal(nt)
			if err != nil {
				t.Fatal(err)
			}
			var back basepb.NamedTensor
			if err := proto.Unmarshal(wire, &back); err != nil {
				t.Fatal(err)
			}
			wantTags := tt.tags
			if wantTags == nil {
				wantTags = []string{"model"}
			}
			if !slices.Equal(back.GetTags(), wantTags) && len(back.GetTags())+len(wantTags) > 0 {
				t.Errorf("tags: got %v, want %v", back.GetTags(), wantTags)
			}
			if !back.GetLossless() || back.GetRoundNumber() != 0 || back.GetReport() != tt.report {
				t.Errorf("got lossless %v round %v report %v, want true 0 %v", back.GetLossless(), back.GetRoundNumber(), back.GetReport(), tt.report)
			}
			if got := len(back.GetTransformerMetadata()); got != 1 {
				t.Fatalf("transformer_metadata: got %v entries, want 1", got)
			}
			s, err := FromNamedTensor(&back)
			if err != nil {
				t.Fatal(err)
			}
			wantShape := tt.span.Shape
			if wantShape == nil {
				wantShape = []int64{}
			}
			if s.Name != tt.span.Name || s.DType != F32 || !slices.Equal(s.Shape, wantShape) || s.Size != int64(len(tt.data)) {
				t.Errorf("got %v, want %v", s, tt.span)
			}
		})
	}
}

func TestFromNamedTensorRefuses(t *testing.T) {
	md := func(dims ...int32) []*basepb.MetadataProto {
		return []*basepb.MetadataProto{{IntList: dims}}
	}
	tests := []struct {
		name string
		nt   *basepb.NamedTensor
		want string
	}{
		{"short data", &basepb.NamedTensor{Name: "w", TransformerMetadata: md(2, 2), DataBytes: make([]byte, 12)},
			`tensor "w": data_bytes has 12 bytes, shape [2 2] needs 16`},
		{"long data", &basepb.NamedTensor{Name: "w", TransformerMetadata: md(2), DataBytes: make([]byte, 12)},
			`tensor "w": data_bytes has 12 bytes, shape [2] needs 8`},
		{"scalar needs 4 bytes", &basepb.NamedTensor{Name: "s", TransformerMetadata: md(), DataBytes: nil},
			`tensor "s": data_bytes has 0 bytes, shape [] needs 4`},
		{"negative dim", &basepb.NamedTensor{Name: "w", TransformerMetadata: md(2, -2), DataBytes: make([]byte, 16)},
			`tensor "w": negative dimension in shape [2 -2]`},
		{"no metadata", &basepb.NamedTensor{Name: "w", DataBytes: make([]byte, 4)},
			`tensor "w": no transformer_metadata, so no shape`},
		{"no name", &basepb.NamedTensor{TransformerMetadata: md(), DataBytes: make([]byte, 4)},
			"tensor with an empty name"},
		{"huge shape", &basepb.NamedTensor{Name: "w", TransformerMetadata: md(1<<31-1, 1<<31-1, 1<<31-1), DataBytes: make([]byte, 4)},
			`tensor "w": shape [2147483647 2147483647 2147483647] is too large`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := FromNamedTensor(tt.nt)
			if got := errString(err); got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}
