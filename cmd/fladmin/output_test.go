package main

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/fedplane/fedplane/adminproto"
)

func TestJSONToYAML(t *testing.T) {
	tests := []struct {
		name string
		json string
		want string
	}{
		{"keys keep their order", `{"z": 1, "a": 2, "job_id": "x"}`, "z: 1\na: 2\njob_id: x\n"},
		{"strings stay strings", `{"n": "42", "t": "2026-01-02T03:04:05Z", "b": "true", "e": "", "nul": "null"}`,
			"n: \"42\"\nt: \"2026-01-02T03:04:05Z\"\nb: \"true\"\ne: \"\"\nnul: \"null\"\n"},
		{"numbers and literals", `{"i": 6000, "f": 0.6931, "x": 1e-7, "ok": false, "none": null}`,
			"i: 6000\nf: 0.6931\nx: 1e-7\nok: false\nnone: null\n"},
		{"nested", `{"shape": ["28", "28"], "job": {"rounds": 3, "envoys": []}, "m": {}}`,
			"shape:\n  - \"28\"\n  - \"28\"\njob:\n  rounds: 3\n  envoys: []\nm: {}\n"},
		{"text that needs quotes", `{"reason": "exit 1: boom", "s": "a\nb", "u": "é <&>"}`,
			"reason: 'exit 1: boom'\ns: |-\n  a\n  b\nu: é <&>\n"},
		{"a list", `[{"name": "a"}, {"name": "b"}]`, "- name: a\n- name: b\n"},
		{"empty list", `[]`, "[]\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := jsonToYAML([]byte(tt.json))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Fatalf("got\n%s\nwant\n%s", got, tt.want)
			}
			var fromYAML, fromJSON any
			if err := yaml.Unmarshal(got, &fromYAML); err != nil {
				t.Fatal(err)
			}
			json.Unmarshal([]byte(tt.json), &fromJSON)
			if !reflect.DeepEqual(normalize(t, fromYAML), fromJSON) {
				t.Fatalf("YAML reads back as %v, want %v", fromYAML, fromJSON)
			}
		})
	}
}

// normalize passes v, decoded from YAML, through JSON, so that it compares
// with a value decoded from JSON (float64 numbers).
func normalize(t *testing.T, v any) any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

var sampleMetrics = []any{
	map[string]any{"seq": 1, "round": 0, "origin": "aggregator", "task": "train", "name": "loss", "value": 0.69314718, "time": "2026-01-02T03:04:05Z"},
	map[string]any{"seq": 2, "round": 0, "origin": "aggregator", "task": "train", "name": "n_samples", "value": 6000, "time": "2026-01-02T03:04:05Z"},
	map[string]any{"seq": 3, "round": 0, "origin": "site-a", "task": "train", "name": "loss", "value": 0.7, "time": "2026-01-02T03:04:05Z"},
	map[string]any{"seq": 4, "round": 1, "origin": "aggregator", "task": "train", "name": "loss", "value": 0.5, "time": "2026-01-02T03:05:05Z"},
	map[string]any{"seq": 5, "round": 1, "origin": "aggregator", "task": "train", "name": "n_samples", "value": 12000, "time": "2026-01-02T03:05:05Z"},
	map[string]any{"seq": 6, "round": 2, "origin": "aggregator", "task": "train", "name": "loss", "value": 1, "time": "2026-01-02T03:06:05Z"},
}

// TestYAMLMatchesJSON runs every command that has -o json with -o yaml too
// and checks that both print the same value, keys and all.
func TestYAMLMatchesJSON(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		reply *adminproto.Message
	}{
		{"list-jobs", []string{"list-jobs"}, ok(map[string]any{"jobs": []any{sampleJob, sampleJob}})},
		{"list-jobs empty", []string{"list-jobs"}, ok(map[string]any{"jobs": []any{}})},
		{"list-envoys", []string{"list-envoys"}, ok(map[string]any{"envoys": []any{
			map[string]any{"name": "site-a", "online": true, "lastSeen": "2026-01-02T03:04:05Z", "samples": 42, "sampleShape": []any{"28", "28"}}}})},
		{"show-job", []string{"show-job", "0b5a6a7e"}, ok(map[string]any{"job": sampleJob})},
		{"wait-job", []string{"wait-job", "0b5a6a7e"}, ok(map[string]any{"job": map[string]any{"job_id": "0b5a6a7e-1111", "status": "finished"}, "events": []any{}, "last_seq": 0})},
		{"abort-job", []string{"abort-job", "0b5a6a7e"}, ok(map[string]any{"job": sampleJob})},
		{"delete-job", []string{"delete-job", "0b5a6a7e"}, ok(map[string]any{"job_id": sampleJob["job_id"]})},
		{"status", []string{"status"}, ok(map[string]any{"version": "v1", "uptime": "5s", "envoys": 2, "envoysOnline": 1, "jobs": map[string]any{"pending": 3}})},
		{"metrics", []string{"metrics", "0b5a6a7e"}, ok(map[string]any{"metrics": sampleMetrics, "jobStatus": "finished", "job_id": "0b5a6a7e-1111"})},
		{"version", []string{"version"}, ok(map[string]any{})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := startFakeAdmin(t, tt.reply)
			jsonOut, stderr, code := runFladminTTY(t, srv.addr, false, append([]string{"-o", "json"}, tt.args...)...)
			if code != 0 {
				t.Fatalf("-o json: exit %d: %s", code, stderr)
			}
			yamlOut, stderr, code := runFladminTTY(t, srv.addr, false, append([]string{"-o", "yaml"}, tt.args...)...)
			if code != 0 {
				t.Fatalf("-o yaml: exit %d: %s", code, stderr)
			}
			var fromJSON, fromYAML any
			if err := json.Unmarshal([]byte(jsonOut), &fromJSON); err != nil {
				t.Fatalf("-o json: %v\n%s", err, jsonOut)
			}
			if err := yaml.Unmarshal([]byte(yamlOut), &fromYAML); err != nil {
				t.Fatalf("-o yaml: %v\n%s", err, yamlOut)
			}
			if got := normalize(t, fromYAML); !reflect.DeepEqual(got, fromJSON) {
				t.Fatalf("-o yaml printed\n%s\nwhich reads as %v; -o json reads as %v", yamlOut, got, fromJSON)
			}
		})
	}
}

// TestMetricsFollowYAML checks that --follow -o yaml prints one document a
// metric, the same metrics -o json prints one a line.
func TestMetricsFollowYAML(t *testing.T) {
	srv := startFakeAdmin(t, ok(map[string]any{"metrics": sampleMetrics, "jobStatus": "finished", "job_id": "0b5a6a7e-1111"}))
	jsonOut, _, code := runFladminTTY(t, srv.addr, false, "-o", "json", "metrics", "--follow", "0b5a6a7e")
	if code != 0 {
		t.Fatalf("-o json: exit %d", code)
	}
	yamlOut, _, code := runFladminTTY(t, srv.addr, false, "-o", "yaml", "metrics", "--follow", "0b5a6a7e")
	if code != 0 {
		t.Fatalf("-o yaml: exit %d", code)
	}
	var want []any
	for line := range strings.SplitSeq(strings.TrimSpace(jsonOut), "\n") {
		var v any
		if err := json.Unmarshal([]byte(line), &v); err != nil {
			t.Fatalf("%v: %q", err, line)
		}
		want = append(want, v)
	}
	var got []any
	dec := yaml.NewDecoder(strings.NewReader(yamlOut))
	for {
		var v any
		if err := dec.Decode(&v); err != nil {
			break
		}
		got = append(got, normalize(t, v))
	}
	if len(want) != len(sampleMetrics) || !reflect.DeepEqual(got, want) {
		t.Fatalf("yaml documents %v, want %v", got, want)
	}
}

func TestFormatMetric(t *testing.T) {
	tests := []struct {
		v    float64
		want string
	}{
		{6000, "6000"}, {0, "0"}, {-3, "-3"}, {1, "1"},
		{0.69314718, "0.6931"}, {3.833333, "3.8333"}, {-0.5, "-0.5000"}, {1e-7, "0.0000"},
		{1e20, "100000000000000000000.0000"},
	}
	for _, tt := range tests {
		if got := formatMetric(tt.v); got != tt.want {
			t.Errorf("formatMetric(%v): got %q, want %q", tt.v, got, tt.want)
		}
	}
}

// TestMetricsFollowMatchesTable checks that --follow prints the header and
// rows the one-shot table prints, on a terminal and on a pipe, and counts
// without decimals.
func TestMetricsFollowMatchesTable(t *testing.T) {
	srv := startFakeAdmin(t, ok(map[string]any{"metrics": sampleMetrics, "jobStatus": "finished", "job_id": "0b5a6a7e-1111"}))
	for _, tty := range []bool{false, true} {
		once, stderr, code := runFladminTTY(t, srv.addr, tty, "metrics", "0b5a6a7e")
		if code != 0 {
			t.Fatalf("metrics: exit %d: %s", code, stderr)
		}
		follow, followErr, code := runFladminTTY(t, srv.addr, tty, "metrics", "--follow", "0b5a6a7e")
		if code != 0 {
			t.Fatalf("metrics --follow: exit %d: %s", code, followErr)
		}
		end := "Job 0b5a6a7e finished\n"
		if tty {
			if follow != once+end {
				t.Fatalf("terminal: --follow printed\n%s\nthe table is\n%s", follow, once)
			}
			continue
		}
		want := "ROUND\tLOSS\tN_SAMPLES\n0\t0.6931\t6000\n1\t0.5000\t12000\n2\t1\t-\n"
		if once != want || follow != want || followErr != end {
			t.Fatalf("pipe: table %q, --follow %q and %q; want %q and %q on stderr", once, follow, followErr, want, end)
		}
	}
}
