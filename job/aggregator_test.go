package job_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/fedplane/fedplane/job"
)

// withAggregator is a minimal job.json with agg as its "aggregator".
func withAggregator(agg string) string {
	return `{"name":"mnist","min_envoys":2,"rounds":3,"train":{"command":["python3","train.py"]},"aggregator":` + agg + `}`
}

func ptr(v float64) *float64 { return &v }

func TestParseManifestAggregator(t *testing.T) {
	tests := []struct {
		in   string
		want job.Aggregator
	}{
		{`{"name":"fedavg"}`, job.Aggregator{Name: "fedavg"}},
		{`{"name":"fedavg","clip_norm":10}`, job.Aggregator{Name: "fedavg", ClipNorm: ptr(10)}},
		{`{"name":"fedavgm"}`, job.Aggregator{Name: "fedavgm", Eta: ptr(1), Momentum: ptr(0.9)}},
		{`{"name":"fedadam"}`, job.Aggregator{Name: "fedadam", Eta: ptr(0.1), Beta1: ptr(0.9), Beta2: ptr(0.99), Tau: ptr(1e-9)}},
		{`{"name":"fedadam","eta":0.01,"beta_1":0.9,"beta_2":0.99,"tau":1e-3,"clip_norm":10}`,
			job.Aggregator{Name: "fedadam", Eta: ptr(0.01), Beta1: ptr(0.9), Beta2: ptr(0.99), Tau: ptr(1e-3), ClipNorm: ptr(10)}},
		{`{"name":"fedyogi","beta_2":0}`, job.Aggregator{Name: "fedyogi", Eta: ptr(0.01), Beta1: ptr(0.9), Beta2: ptr(0), Tau: ptr(1e-3)}},
		{`{"name":"fedadagrad"}`, job.Aggregator{Name: "fedadagrad", Eta: ptr(0.1), Beta1: ptr(0), Tau: ptr(1e-9)}},
		{`{"name":"median"}`, job.Aggregator{Name: "median"}},
		{`{"name":"trimmed_mean"}`, job.Aggregator{Name: "trimmed_mean", Trim: ptr(0.2)}},
		{`{"name":"trimmed_mean","trim":0}`, job.Aggregator{Name: "trimmed_mean", Trim: ptr(0)}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			m, err := job.ParseManifest([]byte(withAggregator(tt.in)))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(*m.Aggregator, tt.want) {
				t.Fatalf("got %v, want %v", m.Aggregator, &tt.want)
			}
			// The stored job.json is the normalised one, and parses to
			// itself: what show-job prints is what runs.
			b, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			again, err := job.ParseManifest(b)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(again, m) {
				t.Fatalf("round trip: got %+v, want %+v", again, m)
			}
		})
	}
	m, err := job.ParseManifest([]byte(minimalManifest))
	if err != nil {
		t.Fatal(err)
	}
	if m.Aggregator != nil {
		t.Fatalf("no aggregator in job.json gave %v", m.Aggregator)
	}
}

func TestParseManifestAggregatorErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{`{"name":"krum"}`, `"aggregator.name" "krum" is not one of fedadagrad, fedadam, fedavg, fedavgm, fedyogi, median, trimmed_mean`},
		{`{}`, `"aggregator.name" "" is not one of`},
		{`{"name":"fedadam","lr":0.1}`, `unknown key "aggregator.lr"`},
		{`{"name":"median","tau":0.1}`, `"aggregator.tau" is not a parameter of median`},
		{`{"name":"fedavg","eta":1}`, `"aggregator.eta" is not a parameter of fedavg`},
		{`{"name":"fedadagrad","beta_2":0.5}`, `"aggregator.beta_2" is not a parameter of fedadagrad`},
		{`{"name":"fedadam","eta":0}`, `"aggregator.eta" must be greater than 0, got 0`},
		{`{"name":"fedadam","beta_1":1}`, `"aggregator.beta_1" must be in [0, 1), got 1`},
		{`{"name":"fedyogi","beta_2":-0.1}`, `"aggregator.beta_2" must be in [0, 1), got -0.1`},
		{`{"name":"fedadam","tau":-1}`, `"aggregator.tau" must be greater than 0, got -1`},
		{`{"name":"fedavgm","momentum":1.5}`, `"aggregator.momentum" must be in [0, 1), got 1.5`},
		{`{"name":"trimmed_mean","trim":0.5}`, `"aggregator.trim" must be in [0, 0.5), got 0.5`},
		{`{"name":"median","clip_norm":0}`, `"aggregator.clip_norm" must be greater than 0, got 0`},
		{`{"name":"fedadam","eta":"0.1"}`, `"aggregator.eta" must be a number, got string`},
		{`{"name":"fedadam","eta":1e999}`, `"aggregator.eta" is out of range`},
		{`{"name":"fedadam","eta":0.1,"eta":0.2}`, `key "aggregator.eta" appears twice`},
		{`"fedadam"`, `"aggregator" must be an object, got string`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			m, err := job.ParseManifest([]byte(withAggregator(tt.in)))
			if err == nil {
				t.Fatalf("got %+v, want an error", m.Aggregator)
			}
			if !strings.Contains(err.Error(), tt.want) || !strings.HasPrefix(err.Error(), "job.json: ") {
				t.Fatalf("got %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestAggregatorString(t *testing.T) {
	m, err := job.ParseManifest([]byte(withAggregator(`{"name":"fedadam","clip_norm":10}`)))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := m.Aggregator.String(), "fedadam eta=0.1 beta_1=0.9 beta_2=0.99 tau=1e-09 clip_norm=10"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}
