package server

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/binary"
	"math"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/fedplane/fedplane/api"
	"github.com/fedplane/fedplane/api/aggregatorpb"
	"github.com/fedplane/fedplane/api/basepb"
	"github.com/fedplane/fedplane/api/directorpb"
)

// This file plays OpenFL 1.6's collaborator against the Aggregator service
// with the headers, tags and metadata its code sends and checks
// (collaborator.py, aggregator_client.py, tensor_codec.py): a model tensor
// asked as ("model",) with require_lossless, results tagged
// ("compressed", "trained") or, with delta_updates, ("compressed",
// "delta", "trained") and after round 0 the model asked as its delta
// ("aggregated", "delta", "compressed"); metrics as report tensors
// ("compressed", "metric") of shape (); TaskResults serialized whole and
// cut into chunks.

// f32s encodes vals as OpenFL's Float32NumpyArrayToBytes does.
func f32s(vals ...float32) []byte {
	b := make([]byte, 0, 4*len(vals))
	for _, v := range vals {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

func fromF32s(b []byte) []float32 {
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}

// collaborator is one OpenFL collaborator's view of the federation.
type collaborator struct {
	name, fed string
	delta     bool                 // the plan's delta_updates
	model     map[string][]float32 // its TensorDB's copy of the global model
}

// header is what OpenFL's AggregatorGRPCClient puts on every request.
func (c *collaborator) header() *aggregatorpb.MessageHeader {
	return &aggregatorpb.MessageHeader{Sender: c.name, Receiver: "aggregator_" + c.fed, FederationUuid: c.fed, SingleColCertCommonName: ""}
}

// checkHeader is aggregator_client.py validate_response.
func (c *collaborator) checkHeader(t *testing.T, what string, h *aggregatorpb.MessageHeader) {
	t.Helper()
	want := &aggregatorpb.MessageHeader{Sender: "aggregator_" + c.fed, Receiver: c.name, FederationUuid: c.fed, SingleColCertCommonName: ""}
	if !proto.Equal(h, want) {
		t.Fatalf("%s reply header: got %v, want %v", what, h, want)
	}
}

var shapes = map[string][]int32{"b": {1}, "w": {2}}

// fetch resolves the global model of round as get_data_for_tensorkey does:
// the whole tensor the first time, the delta once a prior model is held
// and the plan says delta_updates.
func (c *collaborator) fetch(t *testing.T, f *fed, round int32) {
	t.Helper()
	for _, name := range []string{"b", "w"} {
		tags, lossless := []string{"model"}, true
		if c.delta && round > 0 {
			tags, lossless = []string{"aggregated", "delta", "compressed"}, false
		}
		resp, err := f.c.agg.GetAggregatedTensor(context.Background(), &aggregatorpb.GetAggregatedTensorRequest{
			Header: c.header(), TensorName: name, RoundNumber: round, Tags: tags, RequireLossless: lossless})
		if err != nil {
			t.Fatalf("%s: GetAggregatedTensor %s %v: %v", c.name, name, tags, err)
		}
		c.checkHeader(t, "GetAggregatedTensor", resp.GetHeader())
		nt := resp.GetTensor()
		wantTags := []string{"compressed", "model"}
		if c.delta && round > 0 {
			wantTags = []string{"aggregated", "compressed", "delta"}
		}
		md := nt.GetTransformerMetadata()
		switch {
		case resp.GetRoundNumber() != round || nt.GetRoundNumber() != round:
			t.Fatalf("%s: round: got %d/%d, want %d", name, resp.GetRoundNumber(), nt.GetRoundNumber(), round)
		case nt.GetName() != name || !nt.GetLossless() || nt.GetReport():
			t.Fatalf("%s: got %v", name, nt)
		case !slices.Equal(nt.GetTags(), wantTags):
			t.Fatalf("%s: tags: got %q, want %q", name, nt.GetTags(), wantTags)
		case len(md) != 1 || !slices.Equal(md[0].GetIntList(), shapes[name]):
			t.Fatalf("%s: metadata: got %v, want one with int_list %v", name, md, shapes[name])
		}
		vals := fromF32s(nt.GetDataBytes())
		if c.delta && round > 0 {
			for i := range vals {
				vals[i] += c.model[name][i] // tensor_codec.apply_delta
			}
		}
		c.model[name] = vals
	}
}

// namedTensor is utils.construct_named_tensor of the codec's output.
func namedTensor(name string, round int32, report, lossless bool, tags []string, shape []int32, vals ...float32) *basepb.NamedTensor {
	return &basepb.NamedTensor{Name: name, RoundNumber: round, Lossless: lossless, Report: report, Tags: tags,
		TransformerMetadata: []*basepb.MetadataProto{{IntList: shape}}, DataBytes: f32s(vals...)}
}

// train runs the train task: every value moves by step, the loss is
// reported as a metric, and the results go out as OpenFL encodes them.
func (c *collaborator) train(t *testing.T, f *fed, round int32, step float32, dataSize int32) {
	t.Helper()
	res := &aggregatorpb.TaskResults{Header: c.header(), RoundNumber: round, TaskName: "train", DataSize: dataSize}
	for _, name := range []string{"b", "w"} {
		trained := slices.Clone(c.model[name])
		for i := range trained {
			trained[i] += step
		}
		if c.delta {
			d := make([]float32, len(trained))
			for i := range d {
				d[i] = trained[i] - c.model[name][i]
			}
			res.Tensors = append(res.Tensors, namedTensor(name, round, false, false, []string{"compressed", "delta", "trained"}, shapes[name], d...))
		} else {
			res.Tensors = append(res.Tensors, namedTensor(name, round, false, true, []string{"compressed", "trained"}, shapes[name], trained...))
		}
	}
	res.Tensors = append(res.Tensors, namedTensor("loss", round, true, true, []string{"compressed", "metric"}, nil, float32(dataSize)/10))
	b, err := proto.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := f.c.agg.SendLocalTaskResults(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for len(b) > 0 { // small chunks, to cross chunk boundaries
		n := min(len(b), 7)
		if err := stream.Send(&basepb.DataStream{Size: uint32(n), Npbytes: b[:n]}); err != nil {
			t.Fatal(err)
		}
		b = b[n:]
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		t.Fatalf("%s: SendLocalTaskResults of round %d: %v", c.name, round, err)
	}
	c.checkHeader(t, "SendLocalTaskResults", resp.GetHeader())
}

// getTasks is the collaborator's loop head: tasks, sleep or quit.
func (c *collaborator) getTasks(t *testing.T, f *fed) *aggregatorpb.GetTasksResponse {
	t.Helper()
	resp, err := f.c.agg.GetTasks(context.Background(), &aggregatorpb.GetTasksRequest{Header: c.header()})
	if err != nil {
		t.Fatalf("%s: GetTasks: %v", c.name, err)
	}
	c.checkHeader(t, "GetTasks", resp.GetHeader())
	return resp
}

func TestOpenFLCollaboratorRounds(t *testing.T) {
	for _, delta := range []bool{false, true} {
		name := "values"
		if delta {
			name = "delta_updates"
		}
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			f := startFed(t, testCfg(t, newFakeClock()))
			f.register(t, "site-a", "site-b")
			var zbuf bytes.Buffer
			zw := zip.NewWriter(&zbuf)
			w, _ := zw.Create("job.json")
			w.Write([]byte(`{"name": "x", "envoys": ["site-a"], "rounds": 2, "train": {"command": ["true"]}}`))
			zw.Close()
			s, err := f.c.dir.SetNewExperiment(ctx)
			if err != nil {
				t.Fatal(err)
			}
			model := &basepb.ModelProto{Tensors: []*basepb.NamedTensor{
				namedTensor("w", 0, false, true, []string{"model"}, []int32{2}, 1, 2),
				namedTensor("b", 0, false, true, []string{"model"}, []int32{1}, 0.5),
			}}
			if err := s.Send(&directorpb.ExperimentInfo{Name: "openfl-exp", CollaboratorNames: []string{"site-a", "site-b"}, ModelProto: model,
				ExperimentData: &directorpb.ExperimentData{Size: uint32(zbuf.Len()), Npbytes: zbuf.Bytes()}}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.CloseAndRecv(); err != nil {
				t.Fatal(err)
			}
			id := f.waitFor(t, "site-a")
			a := &collaborator{name: "site-a", fed: id, delta: delta, model: map[string][]float32{}}
			b := &collaborator{name: "site-b", fed: id, delta: delta, model: map[string][]float32{}}

			// Round 0: a moves every value by +1 on 1 sample, b by +3 on
			// 3; round 1: a by +1, b by -1: the model moves by the
			// weighted means, +2.5 and -0.5.
			steps := [][2]float32{{1, 3}, {1, -1}}
			for round := int32(0); round < 2; round++ {
				for i, c := range []*collaborator{a, b} {
					resp := c.getTasks(t, f)
					if resp.GetRoundNumber() != round || len(resp.GetTasks()) != 1 || resp.GetTasks()[0].GetName() != "train" {
						t.Fatalf("%s round %d: GetTasks: got %v", c.name, round, resp)
					}
					c.fetch(t, f, round)
					c.train(t, f, round, steps[round][i], int32(1+2*i))
					if resp := c.getTasks(t, f); i == 0 && (resp.GetSleepTime() <= 0 || len(resp.GetTasks()) != 0 || resp.GetQuit()) {
						t.Fatalf("%s after its report: got %v, want sleep", c.name, resp)
					}
				}
				f.settle(t)
			}
			checkFinished(t, f, id, "openfl-exp", map[string][]float32{"b": {2.5}, "w": {3, 4}}, a, b)
			ms, err := f.db.Metrics(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]float64{}
			for _, m := range ms {
				got[m.Origin+"/"+m.Task+"/"+m.Name+"/"+string(rune('0'+m.Round))] = m.Value
			}
			// loss is data_size/10: 0.1 and 0.3, weighted mean 0.25.
			for k, v := range map[string]float64{"site-a/train/loss/0": 0.1, "site-b/train/loss/1": 0.3, "aggregator/train/loss/1": 0.25} {
				if math.Abs(got[k]-v) > 1e-6 {
					t.Errorf("metric %s: got %v, want %v (all: %v)", k, got[k], v, got)
				}
			}
		})
	}
}

// checkFinished checks the end of an OpenFL experiment: both collaborators
// are told to quit, the experiment finished, and its last model is want.
func checkFinished(t *testing.T, f *fed, id, name string, want map[string][]float32, cs ...*collaborator) {
	t.Helper()
	ctx := context.Background()
	for _, c := range cs {
		if resp := c.getTasks(t, f); !resp.GetQuit() || resp.GetSleepTime() != 0 || len(resp.GetTasks()) != 0 || resp.GetRoundNumber() != 2 {
			t.Fatalf("%s at the end: got %v, want quit at round 2 (rounds_to_train)", c.name, resp)
		}
	}
	e, err := f.db.GetExperiment(ctx, id)
	if err != nil || e.Status != api.JobFinished {
		t.Fatalf("experiment: %v %v, want finished", e.Status, err)
	}
	last, err := f.c.dir.GetTrainedModel(ctx, &directorpb.GetTrainedModelRequest{ExperimentName: name, ModelType: directorpb.GetTrainedModelRequest_LAST_MODEL})
	if err != nil {
		t.Fatal(err)
	}
	for _, nt := range last.GetModelProto().GetTensors() {
		if got := fromF32s(nt.GetDataBytes()); !slices.Equal(got, want[nt.GetName()]) {
			t.Errorf("final %s: got %v, want %v", nt.GetName(), got, want[nt.GetName()])
		}
	}
}
