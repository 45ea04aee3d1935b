package job_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fedplane/fedplane/job"
)

const minimalManifest = `{"name":"mnist","min_envoys":2,"rounds":3,"train":{"command":["python3","train.py"]}}`

func TestParseManifestValid(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want *job.Manifest
	}{
		{
			name: "minimal",
			in:   minimalManifest,
			want: &job.Manifest{
				Name:      "mnist",
				MinEnvoys: 2,
				Rounds:    3,
				Train: job.Train{
					Command: []string{"python3", "train.py"},
					Timeout: job.Duration(job.DefaultTrainTimeout),
				},
			},
		},
		{
			name: "full",
			in: `{
				"name": "mnist v2_final-1.0",
				"envoys": ["site-a", "site.b", "ops@site_c"],
				"rounds": 10,
				"train": {"command": ["./train.sh", "--epochs", "1"], "timeout": "1h30m"},
				"best_metric": {"name": "val_acc", "mode": "max"},
				"min_envoys_per_round": 2,
				"round_timeout": "45m",
				"keep_models": 3,
				"description": "digits, three sites"
			}`,
			want: &job.Manifest{
				Name:   "mnist v2_final-1.0",
				Envoys: []string{"site-a", "site.b", "ops@site_c"},
				Rounds: 10,
				Train: job.Train{
					Command: []string{"./train.sh", "--epochs", "1"},
					Timeout: job.Duration(90 * time.Minute),
				},
				BestMetric:        &job.BestMetric{Name: "val_acc", Mode: "max"},
				MinEnvoysPerRound: 2,
				RoundTimeout:      job.Duration(45 * time.Minute),
				KeepModels:        "3",
				Description:       "digits, three sites",
			},
		},
		{
			name: "byte order mark",
			in:   "\xef\xbb\xbf" + minimalManifest,
			want: &job.Manifest{
				Name:      "mnist",
				MinEnvoys: 2,
				Rounds:    3,
				Train:     job.Train{Command: []string{"python3", "train.py"}, Timeout: job.Duration(job.DefaultTrainTimeout)},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := job.ParseManifest([]byte(tt.in))
			if err != nil {
				t.Fatalf("ParseManifest: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

// manifestErrorCases are job.json files that must be refused, with a part of
// the message that says why.
var manifestErrorCases = []struct {
	name string
	in   string
	want string
}{
	{"empty", ``, `job.json: the file is empty`},
	{"syntax", "{\"name\": \"x\",\n  \"rounds\": }", `job.json: not valid JSON: line 2, column 13: invalid character '}'`},
	{"truncated", `{"name": "x"`, `job.json: not valid JSON: unexpected end of input`},
	{"not an object", `["name"]`, `job.json: must be a JSON object, got array`},
	{"null", `null`, `job.json: must be a JSON object, got null`},
	{"trailing data", minimalManifest + ` {}`, `job.json: not valid JSON: line 1, column`},
	{"unknown key", `{"name":"x","roundz":3}`, `job.json: unknown key "roundz"`},
	{"unknown nested key", `{"name":"x","train":{"cmd":["a"]}}`, `job.json: unknown key "train.cmd"`},
	{"key in other case", `{"Name":"x"}`, `job.json: unknown key "Name"`},
	{"repeated key", `{"name":"x","name":"y"}`, `job.json: key "name" appears twice`},
	{"rounds string", `{"name":"x","rounds":"3"}`, `job.json: "rounds" must be a number, got string`},
	{"rounds fraction", `{"name":"x","rounds":2.5}`, `job.json: "rounds" must be a whole number, got 2.5`},
	{"rounds huge", `{"name":"x","rounds":99999999999999999999}`, `job.json: "rounds" is out of range`},
	{"name number", `{"name":1}`, `job.json: "name" must be a string, got number`},
	{"name null", `{"name":null}`, `job.json: "name" must be a string, got null`},
	{"train not object", `{"name":"x","train":["a"]}`, `job.json: "train" must be an object, got array`},
	{"command not list", `{"name":"x","train":{"command":"python3 train.py"}}`, `job.json: "train.command" must be a list of strings, got string`},
	{"command element", `{"name":"x","train":{"command":["a",1]}}`, `job.json: "train.command[1]" must be a string, got number`},
	{"timeout word", `{"name":"x","train":{"command":["a"],"timeout":"soon"}}`, `job.json: "train.timeout": invalid duration "soon"`},
	{"timeout number", `{"name":"x","train":{"command":["a"],"timeout":30}}`, `job.json: "train.timeout" must be a duration string like "30m", got number`},
	{"round timeout word", `{"name":"x","round_timeout":"1 hour"}`, `job.json: "round_timeout": invalid duration "1 hour"`},
	{"too big", `{"description":"` + strings.Repeat("x", job.MaxManifestSize) + `"}`, `job.json: 1048594 bytes exceeds the limit of 1 MiB`},

	{"no name", `{"min_envoys":2,"rounds":3,"train":{"command":["a"]}}`, `job.json: "name" is empty`},
	{"name slash", `{"name":"a/b","min_envoys":2,"rounds":3,"train":{"command":["a"]}}`, `job.json: "name" "a/b" may contain only`},
	{"name dot", `{"name":".hidden","min_envoys":2,"rounds":3,"train":{"command":["a"]}}`, `job.json: "name" ".hidden" must not start with a dot`},
	{"name long", `{"name":"` + strings.Repeat("n", 129) + `","min_envoys":2,"rounds":3,"train":{"command":["a"]}}`, `job.json: "name" is longer than 128 bytes`},
	{"name space", `{"name":"mnist ","min_envoys":2,"rounds":3,"train":{"command":["a"]}}`, `must not start or end with a space`},
	{"both", `{"name":"x","envoys":["a"],"min_envoys":2,"rounds":3,"train":{"command":["a"]}}`, `job.json: "envoys" and "min_envoys" are both set`},
	{"neither", `{"name":"x","rounds":3,"train":{"command":["a"]}}`, `job.json: neither "envoys" nor "min_envoys" is set`},
	{"envoys empty", `{"name":"x","envoys":[],"rounds":3,"train":{"command":["a"]}}`, `job.json: "envoys" is empty`},
	{"envoy empty", `{"name":"x","envoys":["a",""],"rounds":3,"train":{"command":["a"]}}`, `job.json: "envoys[1]" is empty`},
	{"envoy chars", `{"name":"x","envoys":["a b"],"rounds":3,"train":{"command":["a"]}}`, `job.json: "envoys[0]" "a b" has ' '; use letters`},
	{"envoy twice", `{"name":"x","envoys":["a","b","a"],"rounds":3,"train":{"command":["a"]}}`, `job.json: "envoys[2]" "a" repeats "envoys[0]"`},
	{"min envoys negative", `{"name":"x","min_envoys":-1,"rounds":3,"train":{"command":["a"]}}`, `job.json: "min_envoys" must be at least 1, got -1`},
	{"rounds zero", `{"name":"x","min_envoys":2,"rounds":0,"train":{"command":["a"]}}`, `job.json: "rounds" must be at least 1, got 0`},
	{"rounds missing", `{"name":"x","min_envoys":2,"train":{"command":["a"]}}`, `job.json: "rounds" must be at least 1, got 0`},
	{"rounds many", `{"name":"x","min_envoys":2,"rounds":1000001,"train":{"command":["a"]}}`, `job.json: "rounds" must be at most 1000000, got 1000001`},
	{"command empty", `{"name":"x","min_envoys":2,"rounds":3,"train":{"command":[]}}`, `job.json: "train.command" is empty`},
	{"command missing", `{"name":"x","min_envoys":2,"rounds":3}`, `job.json: "train.command" is empty`},
	{"program empty", `{"name":"x","min_envoys":2,"rounds":3,"train":{"command":["","x"]}}`, `job.json: "train.command[0]" is empty`},
	{"timeout negative", `{"name":"x","min_envoys":2,"rounds":3,"train":{"command":["a"],"timeout":"-5m"}}`, `job.json: "train.timeout" must be positive, got -5m0s`},
	{"metric name", `{"name":"x","min_envoys":2,"rounds":3,"train":{"command":["a"]},"best_metric":{"mode":"max"}}`, `job.json: "best_metric.name" is empty`},
	{"metric mode", `{"name":"x","min_envoys":2,"rounds":3,"train":{"command":["a"]},"best_metric":{"name":"acc","mode":"up"}}`, `job.json: "best_metric.mode" must be "max" or "min", got "up"`},
	{"quorum negative", `{"name":"x","min_envoys":2,"rounds":3,"train":{"command":["a"]},"min_envoys_per_round":-1}`, `job.json: "min_envoys_per_round" must not be negative, got -1`},
	{"quorum above envoys", `{"name":"x","envoys":["a","b"],"rounds":3,"train":{"command":["a"]},"min_envoys_per_round":3}`, `job.json: "min_envoys_per_round" is 3, more than the 2 listed in "envoys"`},
	{"quorum above min", `{"name":"x","min_envoys":2,"rounds":3,"train":{"command":["a"]},"min_envoys_per_round":3}`, `job.json: "min_envoys_per_round" is 3, more than "min_envoys" (2)`},
	{"round timeout negative", `{"name":"x","min_envoys":2,"rounds":3,"train":{"command":["a"]},"round_timeout":"-1s"}`, `job.json: "round_timeout" must not be negative, got -1s`},
	{"keep word", `{"name":"x","keep_models":"newest"}`, `job.json: "keep_models" must be "last", "best", "all" or a whole number of rounds (at least 1), got "newest"`},
	{"keep empty", `{"name":"x","keep_models":""}`, `job.json: "keep_models" must be "last", "best", "all" or a whole number of rounds (at least 1), got ""`},
	{"keep count as string", `{"name":"x","keep_models":"3"}`, `job.json: "keep_models" must be "last", "best", "all" or a whole number of rounds (at least 1), got "3"`},
	{"keep zero", `{"name":"x","keep_models":0}`, `job.json: "keep_models" must be "last", "best", "all" or a whole number of rounds (at least 1), got 0`},
	{"keep negative", `{"name":"x","keep_models":-2}`, `got -2`},
	{"keep fraction", `{"name":"x","keep_models":2.5}`, `got 2.5`},
	{"keep exponent", `{"name":"x","keep_models":1e2}`, `got 1e2`},
	{"keep huge", `{"name":"x","keep_models":99999999999999999999}`, `got 99999999999999999999`},
	{"keep case", `{"name":"x","keep_models":"Best"}`, `got "Best"`},
	{"keep bool", `{"name":"x","keep_models":true}`, `job.json: "keep_models" must be "last", "best", "all" or a whole number of rounds (at least 1), got boolean`},
	{"keep null", `{"name":"x","keep_models":null}`, `got null`},
}

func TestParseManifestErrors(t *testing.T) {
	for _, tt := range manifestErrorCases {
		t.Run(tt.name, func(t *testing.T) {
			m, err := job.ParseManifest([]byte(tt.in))
			if err == nil {
				t.Fatalf("got %+v, want error containing %q", m, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %q, want it to contain %q", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "job.json: ") {
				t.Errorf("got %q, want it to start with %q", err, "job.json: ")
			}
			if !errors.Is(err, job.ErrInvalid) {
				t.Errorf("errors.Is(%v, ErrInvalid) = false, want true", err)
			}
		})
	}
}

func TestValidateNeedsTimeout(t *testing.T) {
	m := &job.Manifest{Name: "x", MinEnvoys: 1, Rounds: 1, Train: job.Train{Command: []string{"a"}}}
	err := m.Validate()
	if want := `job.json: "train.timeout" must be positive, got 0s`; err == nil || err.Error() != want {
		t.Errorf("got %v, want %s", err, want)
	}
}

func TestParticipants(t *testing.T) {
	tests := []struct {
		m    job.Manifest
		want int
	}{
		{job.Manifest{Envoys: []string{"a", "b", "c"}}, 3},
		{job.Manifest{MinEnvoys: 5}, 5},
	}
	for _, tt := range tests {
		if got := tt.m.Participants(); got != tt.want {
			t.Errorf("%+v: got %d, want %d", tt.m, got, tt.want)
		}
	}
}

func TestDurationJSON(t *testing.T) {
	b, err := json.Marshal(job.Train{Command: []string{"a"}, Timeout: job.Duration(90 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(b), `{"command":["a"],"timeout":"1m30s"}`; got != want {
		t.Errorf("got %s, want %s", got, want)
	}
	var tr job.Train
	if err := json.Unmarshal(b, &tr); err != nil {
		t.Fatal(err)
	}
	if got, want := tr.Timeout, job.Duration(90*time.Second); got != want {
		t.Errorf("got %v, want %v", got, want)
	}
	if err := json.Unmarshal([]byte(`{"timeout":5}`), &tr); err == nil {
		t.Errorf("got nil error for a numeric duration, want one")
	}
}

func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(minimalManifest))
	for _, tt := range manifestErrorCases {
		if len(tt.in) < 4096 {
			f.Add([]byte(tt.in))
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := job.ParseManifest(b)
		if err != nil {
			if !errors.Is(err, job.ErrInvalid) || !strings.HasPrefix(err.Error(), "job.json: ") {
				t.Fatalf("error %q does not wrap ErrInvalid or lacks the job.json prefix", err)
			}
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("parsed manifest does not validate: %v", err)
		}
		out, err := json.Marshal(m)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		m2, err := job.ParseManifest(out)
		if err != nil {
			t.Fatalf("reparse %s: %v", out, err)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("got %+v after a round trip, want %+v", m2, m)
		}
	})
}

// TestKeepModels checks each form of keep_models: what it keeps, and that
// it reads back as written (the director stores job.json re-encoded).
func TestKeepModels(t *testing.T) {
	tests := []struct {
		json     string
		want     job.KeepModels
		newest   int
		best     bool
		asString string
	}{
		{``, "", 1, true, "best"},
		{`"best"`, job.KeepBest, 1, true, "best"},
		{`"last"`, job.KeepLast, 1, false, "last"},
		{`"all"`, job.KeepAll, 0, false, "all"},
		{`1`, "1", 1, true, "1"},
		{`4`, "4", 4, true, "4"},
	}
	for _, tt := range tests {
		t.Run(tt.asString, func(t *testing.T) {
			in := minimalManifest
			if tt.json != "" {
				in = strings.TrimSuffix(in, "}") + `,"keep_models":` + tt.json + "}"
			}
			m, err := job.ParseManifest([]byte(in))
			if err != nil {
				t.Fatal(err)
			}
			k := m.KeepModels
			if k != tt.want || k.Newest() != tt.newest || k.Best() != tt.best || k.String() != tt.asString {
				t.Errorf("got %q (newest %d, best %v, %s), want %q (newest %d, best %v, %s)",
					k, k.Newest(), k.Best(), k, tt.want, tt.newest, tt.best, tt.asString)
			}
			b, err := json.Marshal(m)
			if err != nil {
				t.Fatal(err)
			}
			if tt.json != "" && !strings.Contains(string(b), `"keep_models":`+tt.json) {
				t.Errorf("re-encoded: got %s, want it to hold \"keep_models\":%s", b, tt.json)
			}
			again, err := job.ParseManifest(b)
			if err != nil || again.KeepModels != k {
				t.Errorf("read back: got %v %v, want %q", again, err, k)
			}
		})
	}
	bad := &job.Manifest{Name: "x", MinEnvoys: 1, Rounds: 1, Train: job.Train{Command: []string{"a"}, Timeout: job.Duration(time.Minute)}, KeepModels: "0"}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), `"keep_models" must be`) {
		t.Errorf("Validate of keep_models 0: got %v, want it refused", err)
	}
}
