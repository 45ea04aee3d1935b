package e2e

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// withAggregator adds "aggregator": agg to the job.json of the job folder
// dir (trainJob's).
func withAggregator(tb testing.TB, dir, agg string) string {
	tb.Helper()
	path := filepath.Join(dir, "job.json")
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	s := strings.TrimSuffix(strings.TrimSpace(string(b)), "}") + `, "aggregator": ` + agg + "}"
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		tb.Fatal(err)
	}
	return dir
}

// constantSites are three envoys whose training adds a constant, with their
// sample counts.
var constantSites = []struct {
	name     string
	constant float64
	samples  int
}{{"site-a", 1, 10}, {"site-b", 2, 20}, {"site-c", 6, 30}}

// TestAggregators runs real jobs through three envoys with fedadam and
// median, and checks each final model against the math, element by
// element in float64: every site sends x + its constant.
func TestAggregators(t *testing.T) {
	d := startDirectorAdmin(t, t.TempDir(), fastDirector...)
	for _, s := range constantSites {
		startEnvoy(t, d, s.name, makeShard(t, s.constant, s.samples))
	}
	waitOnline(t, d, "site-a", "site-b", "site-c")
	start := map[string][]float32{"w": {1, 2, 3, 4}, "b": {0.5}}
	const rounds = 3

	// median of x+1, x+2, x+6 is x+2, whatever the weights.
	id := submitJob(t, d, withAggregator(t, trainJob(t, "median", `"min_envoys": 3`, rounds, "ok", "1m"), `{"name": "median"}`))
	if r := fladmin(t, d.admin, "wait-job", id, "--wait-timeout", "60s"); r.code != 0 {
		t.Fatalf("median job: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	model := readRoundModel(t, d.dataDir, id, rounds)
	for name, vals := range start {
		for i, v := range vals {
			want := float64(v)
			for range rounds {
				want = float64(float32(want + 2))
			}
			if float64(model[name][i]) != want {
				t.Fatalf("median: final %s[%d] = %v, want %v", name, i, model[name][i], want)
			}
		}
	}

	// fedadam with clip_norm large enough to leave the updates alone. The
	// stored job.json shows the defaults that ran.
	id = submitJob(t, d, withAggregator(t, trainJob(t, "adam", `"min_envoys": 3`, rounds, "ok", "1m"), `{"name": "fedadam", "tau": 0.001, "clip_norm": 100}`))
	if r := fladmin(t, d.admin, "wait-job", id, "--wait-timeout", "60s"); r.code != 0 {
		t.Fatalf("fedadam job: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	show := mustFladmin(t, d.admin, "show-job", id)
	for _, want := range []string{`"name": "fedadam"`, `"eta": 0.1`, `"beta_1": 0.9`, `"beta_2": 0.99`, `"tau": 0.001`, `"clip_norm": 100`} {
		if !strings.Contains(show, want) {
			t.Fatalf("show-job lacks %s:\n%s", want, show)
		}
	}
	model = readRoundModel(t, d.dataDir, id, rounds)
	var wsum float64
	for _, s := range constantSites {
		wsum += float64(s.samples)
	}
	for name, vals := range start {
		for i, v := range vals {
			x, m, vv := float64(v), 0.0, 0.0
			for step := 1; step <= rounds; step++ {
				var delta float64
				for _, s := range constantSites {
					xi := float64(float32(x + s.constant)) // what train.py sends
					delta += float64(s.samples) * (xi - x) / wsum
				}
				m = 0.9*m + 0.1*delta
				vv = 0.99*vv + 0.01*delta*delta
				eta := 0.1 * math.Sqrt(1-math.Pow(0.99, float64(step))) / (1 - math.Pow(0.9, float64(step)))
				x = float64(float32(x + eta*m/(math.Sqrt(vv)+0.001)))
				m, vv = float64(float32(m)), float64(float32(vv))
			}
			if got := float64(model[name][i]); math.Abs(got-x) > 1e-6*math.Max(1, math.Abs(x)) {
				t.Fatalf("fedadam: final %s[%d] = %v, want %v", name, i, got, x)
			}
		}
	}
}

// TestKillDirectorMidRoundFedAdam kills the director while a fedadam job
// trains round 1, then runs the same job without interruption: both final
// models must be the same bytes, so the server state came back exactly.
func TestKillDirectorMidRoundFedAdam(t *testing.T) {
	d := startDirectorAdmin(t, t.TempDir(), fastDirector...)
	shardA := makeShard(t, 1, 10)
	startEnvoy(t, d, "site-a", shardA)
	startEnvoy(t, d, "site-b", makeShard(t, 3, 30))
	waitOnline(t, d, "site-a", "site-b")
	const agg = `{"name": "fedadam", "eta": 0.05}`
	jobDir := withAggregator(t, trainJob(t, "resume", `"min_envoys": 2`, 3, "slow", "1m"), agg)
	id := submitJob(t, d, jobDir)
	eventually(t, 60*time.Second, "round 0 aggregated", func() bool { return roundModelExists(d.dataDir, id, 1) })
	eventually(t, 60*time.Second, "site-a training round 1", func() bool { return trainingRound(shardA) == "1" })
	d.proc.Kill()
	checkDatabase(t, d.dataDir)
	d = restartDirector(t, d, fastDirector...)
	if r := fladmin(t, d.admin, "wait-job", id, "--wait-timeout", "90s"); r.code != 0 {
		t.Fatalf("job after a director kill: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	again := submitJob(t, d, withAggregator(t, trainJob(t, "uninterrupted", `"min_envoys": 2`, 3, "ok", "1m"), agg))
	if r := fladmin(t, d.admin, "wait-job", again, "--wait-timeout", "90s"); r.code != 0 {
		t.Fatalf("uninterrupted job: exit %d: %s %s", r.code, r.stdout, r.stderr)
	}
	read := func(id string) []byte {
		b, err := os.ReadFile(filepath.Join(d.dataDir, "experiments", id, "models", "round-0003.safetensors"))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if !bytes.Equal(read(id), read(again)) {
		t.Fatalf("the resumed fedadam job's final model differs from an uninterrupted run's:\n%v\n%v",
			readRoundModel(t, d.dataDir, id, 3), readRoundModel(t, d.dataDir, again, 3))
	}
	// Round 0's model is pruned (keep_models): the job folder has it.
	if start := readSafetensorsFile(t, filepath.Join(jobDir, "model.safetensors")); readRoundModel(t, d.dataDir, id, 3)["b"][0] == start["b"][0] {
		t.Fatal("the final model equals the initial one: the job did not train")
	}
}
