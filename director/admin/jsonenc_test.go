package admin

import (
	"encoding/json"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/fedplane/fedplane/api"
)

// jsonStrings are strings whose escaping differs between naive encoders.
var jsonStrings = []string{
	"", "plain", `quote " and \ backslash`, "<html> & 'apostrophe'", "\b\f\n\r\t\x00\x01\x1f\x7f",
	"é 日本語 🙂", "\u2028\u2029", "bad \xff utf-8 \xc3", "\xed\xa0\x80 surrogate", "end\\",
}

func TestAppendJSONString(t *testing.T) {
	for _, s := range jsonStrings {
		want, _ := json.Marshal(s)
		if got := appendJSONString(nil, s); string(got) != string(want) {
			t.Errorf("appendJSONString(%q) = %s, encoding/json gives %s", s, got, want)
		}
	}
}

func FuzzAppendJSONString(f *testing.F) {
	for _, s := range jsonStrings {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := json.Marshal(s)
		if got := appendJSONString(nil, s); string(got) != string(want) {
			t.Fatalf("appendJSONString(%q) = %s, encoding/json gives %s", s, got, want)
		}
	})
}

func TestAppendEnvoyJSON(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	pick := func() string { return jsonStrings[rng.IntN(len(jsonStrings))] }
	zones := []*time.Location{time.UTC, time.FixedZone("x", -(3*3600 + 30*60)), time.Local}
	envoys := []api.Envoy{{CUDADevices: []api.CUDADevice{}}, {SampleShape: []string{}, TargetShape: []string{""}, CUDADevices: []api.CUDADevice{}}}
	for range 200 {
		e := api.Envoy{
			Name: pick(), Online: rng.IntN(2) == 0, Experiment: pick(), ExperimentRunning: rng.IntN(2) == 0,
			Samples: rng.Uint64(), Shard: pick(),
			LastSeen:     time.Unix(rng.Int64N(1<<34), rng.Int64N(1e9)).In(zones[rng.IntN(len(zones))]),
			RegisteredAt: time.Unix(rng.Int64N(1<<34), 0).In(zones[rng.IntN(len(zones))]),
		}
		for range rng.IntN(4) {
			e.SampleShape = append(e.SampleShape, pick())
		}
		if rng.IntN(2) == 0 {
			e.TargetShape = []string{pick()}
		}
		e.CUDADevices = []api.CUDADevice{}
		for i := range rng.IntN(3) {
			e.CUDADevices = append(e.CUDADevices, api.CUDADevice{Index: uint64(i), MemoryTotal: 16 << 30, Name: pick(), CUDAVersion: "12.4"})
		}
		envoys = append(envoys, e)
	}
	for _, e := range envoys {
		want, err := json.Marshal(&e)
		if err != nil {
			t.Fatal(err)
		}
		devs, err := json.Marshal(e.CUDADevices)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendEnvoyJSON(nil, &e, string(devs)); string(got) != string(want) {
			t.Fatalf("appendEnvoyJSON = %s\nencoding/json gives %s", got, want)
		}
	}
}
