package server

import (
	"bytes"
	"context"
	"math"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fedplane/fedplane/api/basepb"
	"github.com/fedplane/fedplane/tensor"
)

// resultsBytes is the serialized TaskResults of a model.
func resultsBytes(t *testing.T, envoy, id string, round int32, model map[string][]float32, shapes map[string][]int64) []byte {
	t.Helper()
	var file bytes.Buffer
	if err := tensor.WriteFloat32Safetensors(&file, model, shapes); err != nil {
		t.Fatal(err)
	}
	x, _, err := tensor.ReadSafetensors(bytes.NewReader(file.Bytes()), int64(file.Len()))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if _, err := tensor.WriteTaskResults(&out, tensor.TaskResultsHeader{Sender: envoy, Receiver: "director", FederationUUID: id, Round: round, TaskName: "train", DataSize: 10}, x, nil); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// sendFirst sends the first 64 KiB of results and waits for the director's
// answer without sending the rest: a refusal arrives only if the director
// decided on those bytes alone.
func (f *fed) sendFirst(t *testing.T, results []byte) error {
	t.Helper()
	stream, err := f.c.agg.SendLocalTaskResults(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	first := results[:64<<10]
	if err := stream.Send(&basepb.DataStream{Size: uint32(len(first)), Npbytes: first}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Header(); err != nil {
		return err
	}
	_, err = stream.CloseAndRecv()
	return err
}

// TestReportChecksBeforeWriting: who sends results, for which experiment
// and round, is checked from the stream's first bytes, before the rest is
// read or anything is written.
func TestReportChecksBeforeWriting(t *testing.T) {
	ctx := context.Background()
	f := startFed(t, testCfg(t, newFakeClock()))
	f.register(t, "site-a", "site-b", "site-c")
	id := f.submitJob(t, `{"name": "checks", "envoys": ["site-a", "site-b"], "rounds": 2, "train": {"command": ["true"]}}`)
	f.waitFor(t, "site-a")
	// Over the 64 KiB the director reads first: a padding tensor.
	pad := map[string][]float32{"w": make([]float32, 6), "b": make([]float32, 2), "pad": make([]float32, 1<<15)}
	shapes := map[string][]int64{"w": {2, 3}, "b": {2}}
	tests := []struct {
		name  string
		envoy string
		id    string
		round int32
		want  codes.Code
		msg   string
	}{
		{"not a participant", "site-c", id, 0, codes.PermissionDenied, "site-c is not a participant"},
		{"unknown experiment", "site-a", "no-such-experiment", 0, codes.NotFound, ""},
		{"another round", "site-a", id, 1, codes.FailedPrecondition, "results are for round 1, the current round is 0"},
		{"no sender", "", id, 0, codes.InvalidArgument, "must be named"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := f.sendFirst(t, resultsBytes(t, tt.envoy, tt.id, tt.round, pad, shapes))
			if status.Code(err) != tt.want || !strings.Contains(status.Convert(err).Message(), tt.msg) {
				t.Fatalf("got %v, want %v with %q", err, tt.want, tt.msg)
			}
		})
	}
	// Over the most the model allows: refused while it streams.
	big := map[string][]float32{"w": make([]float32, 6), "b": make([]float32, 2), "pad": make([]float32, 1<<19)}
	err := f.sendResults(t, resultsBytes(t, "site-a", id, 0, big, shapes))
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "larger than the model allows") {
		t.Fatalf("results over the model's size: got %v, want ResourceExhausted", err)
	}
	// Non-finite values: refused, naming the tensor; the round does not
	// count them, and finite results are taken afterwards.
	for _, v := range []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))} {
		bad := map[string][]float32{"w": {1, 2, 3, 4, 5, v}, "b": {1, 1}}
		err := f.sendResults(t, resultsBytes(t, "site-a", id, 0, bad, shapes))
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), `tensor "w": element 5 [1 2] is`) {
			t.Fatalf("results with %v: got %v, want InvalidArgument naming the tensor", v, err)
		}
	}
	for _, envoy := range []string{"site-a", "site-b"} {
		good := map[string][]float32{"w": {1, 2, 3, 4, 5, 6}, "b": {1, 1}}
		if err := f.sendResults(t, resultsBytes(t, envoy, id, 0, good, shapes)); err != nil {
			t.Fatalf("finite results of %s: %v", envoy, err)
		}
	}
	f.settle(t)
	if e, _ := f.db.GetExperiment(ctx, id); e.RoundsDone != 1 {
		t.Fatalf("after both finite reports: round %d (%s %q), want 1", e.RoundsDone, e.Status, e.Reason)
	}
}

// sendResults streams results in chunks and returns the director's answer.
func (f *fed) sendResults(t *testing.T, results []byte) error {
	t.Helper()
	stream, err := f.c.agg.SendLocalTaskResults(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	w := tensor.NewChunkWriter(stream.Send, 0)
	if _, err := w.Write(results); err == nil {
		w.Close()
	}
	_, err = stream.CloseAndRecv()
	return err
}

// TestResultsTempSpace: an upload that would take the director's temp space
// for results past --max-results-in-flight is refused, and told to retry.
func TestResultsTempSpace(t *testing.T) {
	cfg := testCfg(t, newFakeClock())
	cfg.MaxResultsInFlight = 1 << 10
	f := startFed(t, cfg)
	f.register(t, "site-a")
	id := f.submitJob(t, `{"name": "space", "envoys": ["site-a"], "rounds": 1, "train": {"command": ["true"]}}`)
	f.waitFor(t, "site-a")
	good := map[string][]float32{"w": {1, 2, 3, 4, 5, 6}, "b": {1, 1}}
	err := f.sendResults(t, resultsBytes(t, "site-a", id, 0, good, map[string][]int64{"w": {2, 3}, "b": {2}}))
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "temp space for results") {
		t.Fatalf("got %v, want ResourceExhausted for the temp space", err)
	}
}
