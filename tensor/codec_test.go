package tensor

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

// TestRequestedForm pins the tags OpenFL 1.6's aggregator answers with
// (aggregator.py get_aggregated_tensor, tensor_codec.py, utils.change_tags
// which returns sorted tuples).
func TestRequestedForm(t *testing.T) {
	tests := []struct {
		name     string
		tags     []string
		round    int
		wantForm Form
		wantTags []string
		wantErr  string
	}{
		{"fedplane envoy", []string{"model"}, 0, FormValues, []string{"compressed", "model"}, ""},
		{"no tags", nil, 3, FormValues, []string{"compressed", "model"}, ""},
		{"model compressed", []string{"model", "compressed"}, 1, FormValues, []string{"compressed", "model"}, ""},
		{"aggregated", []string{"aggregated"}, 2, FormValues, []string{"aggregated", "compressed"}, ""},
		{"trained compressed", []string{"compressed", "trained"}, 0, FormValues, []string{"compressed", "trained"}, ""},
		{"lossy asked", []string{"model", "lossy_compressed"}, 0, FormValues, []string{"compressed", "model"}, ""},
		{"delta", []string{"aggregated", "delta", "compressed"}, 1, FormDelta, []string{"aggregated", "compressed", "delta"}, ""},
		{"delta round 0", []string{"aggregated", "delta", "compressed"}, 0, 0, nil, "deltas exist from round 1 on"},
		{"unknown tag", []string{"model", "site-a"}, 0, 0, nil, "name no form of the global model"},
		{"trained delta", []string{"trained", "delta"}, 1, 0, nil, "name no form of the global model"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			form, tags, err := RequestedForm(tt.tags, tt.round)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if form != tt.wantForm || !slices.Equal(tags, tt.wantTags) {
				t.Fatalf("got %v %q, want %v %q", form, tags, tt.wantForm, tt.wantTags)
			}
		})
	}
}

// TestFedAvgDeltas: an input tagged delta counts as model + delta, so the
// result is model plus the weighted mean of the inputs' deltas, mixed
// freely with inputs that send values.
func TestFedAvgDeltas(t *testing.T) {
	model := mustFloat32Index(t, map[string][]float32{"w": {1, 2, 3}, "b": {10}}, nil)
	delta := func(w []float32, b float32) *Index {
		x := mustFloat32Index(t, map[string][]float32{"w": w, "b": {b}}, nil)
		for i := range x.Tensors {
			x.Tensors[i].Delta = true
		}
		return x
	}
	values := mustFloat32Index(t, map[string][]float32{"w": {5, 6, 7}, "b": {14}}, nil) // delta +4 everywhere
	for _, chunk := range []int{1, 2, 1 << 16} {
		got := mustAverage(t, model, []Input{
			{delta([]float32{1, 1, 1}, 1), 1},
			{delta([]float32{-1, 0, 1}, -2), 2},
			{values, 1},
		}, chunk)
		// means of deltas: w: (1 + 2·(-1,0,1) + 4)/4 = (0.75, 1.25, 1.75), b: (1 - 4 + 4)/4 = 0.25
		for name, want := range map[string][]float32{"w": {1.75, 3.25, 4.75}, "b": {10.25}} {
			vals, err := got.Float32s(name)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(vals, want) {
				t.Errorf("chunk %d: %s: got %v, want %v", chunk, name, vals, want)
			}
		}
	}
}

// TestReadTaskResultsOpenFLForms reads task results as OpenFL's
// collaborator encodes them: trained tensors tagged ("compressed",
// "trained") or, with delta_updates, ("compressed", "delta", "trained"),
// metrics tagged ("compressed", "metric") with report set and shape ();
// a lossy pipeline's tensors are refused with the reason.
func TestReadTaskResultsOpenFLForms(t *testing.T) {
	enc := func(tags []string, report bool, shape []int64, vals ...float32) []byte {
		data := f32le(vals...)
		b := appendTensorPrefix(nil, "x", tags, report, shape, int64(len(data)))
		return append(b, data...)
	}
	tests := []struct {
		name      string
		msg       []byte
		wantDelta bool
		wantErr   string
	}{
		{"trained", enc([]string{"compressed", "trained"}, false, []int64{2}, 1, 2), false, ""},
		{"delta", enc([]string{"compressed", "delta", "trained"}, false, []int64{2}, 1, 2), true, ""},
		{"metric", enc([]string{"compressed", "metric"}, true, nil, 0.5), false, ""},
		{"lossy", enc([]string{"lossy_compressed", "trained"}, false, []int64{2}, 1, 2), false, "lossy"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := ReadTaskResults(bytes.NewReader(tt.msg), int64(len(tt.msg)))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.name == "metric" {
				if len(res.Metrics) != 1 || res.Metrics[0].Value != 0.5 {
					t.Fatalf("metrics: got %v, want x=0.5", res.Metrics)
				}
				return
			}
			if len(res.Model.Tensors) != 1 || res.Model.Tensors[0].Delta != tt.wantDelta {
				t.Fatalf("got %+v, want one tensor with Delta %v", res.Model.Tensors, tt.wantDelta)
			}
		})
	}
}
