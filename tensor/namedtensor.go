package tensor

import (
	"errors"
	"fmt"
	"math"
	"slices"

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

// Tags OpenFL's TensorCodec puts on a NamedTensor (openfl/pipelines/
// tensor_codec.py). A model tensor is "model" (the global model a round
// trains from), "aggregated" (the aggregator's result of a round, the same
// values), or "trained" (a collaborator's result); "delta" marks the
// difference from the round's base model rather than the values;
// "compressed" says the lossless codec encoded it (float32 bytes and the
// shape, the only encoding fedplane speaks), "lossy_compressed" a lossy one.
const (
	TagModel           = "model"
	TagAggregated      = "aggregated"
	TagTrained         = "trained"
	TagDelta           = "delta"
	TagMetric          = "metric"
	TagCompressed      = "compressed"
	TagLossyCompressed = "lossy_compressed"
)

// Form is which form of a global tensor a GetAggregatedTensor request
// asks for.
type Form int

const (
	// FormValues is the tensor of the round's global model.
	FormValues Form = iota
	// FormDelta is the round's global tensor minus the previous round's,
	// what an OpenFL collaborator with delta_updates asks for after round
	// 0 ("aggregated", "delta", "compressed").
	FormDelta
)

// RequestedForm reads the tags of a GetAggregatedTensor request for a tensor
// of round: which form of the global tensor they ask for, and the tags of
// the reply as OpenFL's aggregator gives them. OpenFL's aggregator looks
// the tensor up without its codec tag and its lossless codec adds
// "compressed" back; its tag tuples are sorted sets (change_tags), so a
// request for ("model",) gets ("compressed", "model") and one for
// ("aggregated", "delta", "compressed") gets ("aggregated", "compressed",
// "delta"). No tags at all ask for the model too, as fedplane's tests and
// older envoys send them. A delta before round 1 has no base: OpenFL's
// aggregator has no such tensor either.
func RequestedForm(tags []string, round int) (Form, []string, error) {
	set := map[string]bool{}
	for _, t := range tags {
		switch t {
		case TagCompressed:
		case TagLossyCompressed:
			// OpenFL asks lossy only with a lossy pipeline; the reply is
			// lossless either way, as OpenFL's own aggregator answers
			// require_lossless requests.
		default:
			set[t] = true
		}
	}
	form := FormValues
	switch {
	case len(set) == 0, len(set) == 1 && (set[TagModel] || set[TagAggregated] || set[TagTrained]):
		if len(set) == 0 {
			set[TagModel] = true
		}
	case len(set) == 2 && set[TagAggregated] && set[TagDelta]:
		if round < 1 {
			return 0, nil, fmt.Errorf("tags %q ask for a delta of round %d; deltas exist from round 1 on", tags, round)
		}
		form = FormDelta
	default:
		return 0, nil, fmt.Errorf("tags %q name no form of the global model (one of %q, %q, %q, or %q with %q, each optionally %q)",
			tags, TagModel, TagAggregated, TagTrained, TagAggregated, TagDelta, TagCompressed)
	}
	set[TagCompressed] = true
	reply := make([]string, 0, len(set))
	for t := range set {
		reply = append(reply, t)
	}
	slices.Sort(reply)
	return form, reply, nil
}
