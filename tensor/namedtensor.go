package tensor

import (
	"errors"
	"fmt"
	"math"

	"github.com/fedplane/fedplane/api/basepb"
)

// NamedTensor returns s with its bytes data as an OpenFL NamedTensor in the
// uncompressed encoding OpenFL peers use: round_number 0, lossless, the
// shape as the int_list of a single MetadataProto, and data_bytes the
// little-endian float32 array in C order. nil tags mean ["model"]. The wire
// has no dtype and int32 dimensions, so s should be F32 with dimensions that
// fit an int32; WriteTaskResults checks that, this function does not.
func NamedTensor(s Span, data []byte, tags []string, report bool) *basepb.NamedTensor {
	if tags == nil {
		tags = []string{"model"}
	}
	dims := make([]int32, len(s.Shape))
	for i, d := range s.Shape {
		dims[i] = int32(d)
	}
	return &basepb.NamedTensor{
		Name:                s.Name,
		Lossless:            true,
		Report:              report,
		Tags:                tags,
		TransformerMetadata: []*basepb.MetadataProto{{IntList: dims}},
		DataBytes:           data,
	}
}

// FromNamedTensor returns the span of nt: its name, dtype F32, the shape in
// its first MetadataProto's int_list (empty for a scalar), and Size the
// length of its data_bytes, which must be 4 bytes per element. Offset is 0:
// the data is nt.DataBytes.
func FromNamedTensor(nt *basepb.NamedTensor) (Span, error) {
	name := nt.GetName()
	if name == "" {
		return Span{}, errors.New("tensor with an empty name")
	}
	md := nt.GetTransformerMetadata()
	if len(md) == 0 {
		return Span{}, fmt.Errorf("tensor %q: no transformer_metadata, so no shape", name)
	}
	shape, err := shapeOf(md[0].GetIntList())
	if err != nil {
		return Span{}, fmt.Errorf("tensor %q: %w", name, err)
	}
	if err := checkDataSize(int64(len(nt.GetDataBytes())), shape); err != nil {
		return Span{}, fmt.Errorf("tensor %q: %w", name, err)
	}
	return Span{Name: name, DType: F32, Shape: shape, Size: int64(len(nt.GetDataBytes()))}, nil
}

// shapeOf converts a wire int_list to a shape, refusing negative dimensions.
func shapeOf(dims []int32) ([]int64, error) {
	shape := make([]int64, len(dims))
	for i, d := range dims {
		if d < 0 {
			return nil, fmt.Errorf("negative dimension in shape %v", dims)
		}
		shape[i] = int64(d)
	}
	return shape, nil
}

// checkDataSize checks that n bytes are exactly a float32 array of shape.
func checkDataSize(n int64, shape []int64) error {
	elems := elements(shape)
	if elems < 0 || elems > math.MaxInt64/4 {
		return fmt.Errorf("shape %v is too large", shape)
	}
	if n != 4*elems {
		return fmt.Errorf("data_bytes has %d bytes, shape %v needs %d", n, shape, 4*elems)
	}
	return nil
}
