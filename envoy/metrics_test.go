package envoy

import (
	"math"
	"reflect"
	"strings"
	"testing"
)

func TestParseMetrics(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []metric
		wantErr string
	}{
		{name: "empty", in: "", want: nil},
		{name: "blank lines", in: "\n  \n\r\n", want: nil},
		{
			name: "two metrics",
			in:   `{"name": "loss", "value": 0.25}` + "\n" + `{"name":"acc","value":1}` + "\n",
			want: []metric{{"loss", 0.25}, {"acc", 1}},
		},
		{
			name: "crlf, blank lines and no final newline",
			in:   "\r\n" + `{"name": "loss", "value": -3e-2}` + "\r\n\n" + `{"name": "n_samples", "value": 600}`,
			want: []metric{{"loss", -0.03}, {"n_samples", 600}},
		},
		{name: "extra keys ignored", in: `{"name": "loss", "value": 1, "epoch": 3}`, want: []metric{{"loss", 1}}},
		{name: "not json", in: `{"name": "a", "value": 1}` + "\nloss=0.3\n", wantErr: `metrics line 2: want a JSON object`},
		{name: "trailing garbage", in: `{"name": "a", "value": 1} x`, wantErr: "metrics line 1: want a JSON object"},
		{name: "array", in: `[1, 2]`, wantErr: "metrics line 1: want a JSON object"},
		{name: "null", in: `null`, wantErr: "metrics line 1: want a JSON object"},
		{name: "NaN", in: `{"name": "loss", "value": NaN}`, wantErr: "metrics line 1: want a JSON object"},
		{name: "missing name", in: `{"value": 1}`, wantErr: `metrics line 1: "name" is missing`},
		{name: "empty name", in: `{"name": "", "value": 1}`, wantErr: `metrics line 1: "name" is empty`},
		{name: "name not a string", in: `{"name": 7, "value": 1}`, wantErr: `metrics line 1: "name" must be a string`},
		{name: "long name", in: `{"name": "` + strings.Repeat("x", 1025) + `", "value": 1}`, wantErr: "at most 1024 allowed"},
		{name: "missing value", in: `{"name": "loss"}`, wantErr: `metrics line 1: metric "loss": "value" is missing`},
		{name: "string value", in: `{"name": "loss", "value": "0.3"}`, wantErr: `metrics line 1: metric "loss": "value" must be a number`},
		{name: "null value", in: `{"name": "loss", "value": null}`, wantErr: `"value" must be a number`},
		{name: "too large for float32", in: `{"name": "loss", "value": 1e39}`, wantErr: "does not fit a float32"},
		{name: "too large for float64", in: `{"name": "loss", "value": 1e400}`, wantErr: `"value" must be a number`},
		{name: "repeated name", in: `{"name": "a", "value": 1}` + "\n\n" + `{"name": "a", "value": 2}`, wantErr: `metrics line 3: metric "a" repeats line 1`},
		{name: "line too long", in: `{"name": "a", "value": 1}` + "\n" + strings.Repeat(" ", maxMetricLine+1), wantErr: "metrics line 2: longer than 65536 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseMetrics(strings.NewReader(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestParseMetricsLimit(t *testing.T) {
	var b strings.Builder
	for i := range maxMetrics + 1 {
		b.WriteString(`{"name": "m` + string(rune('a'+i%26)) + strings.Repeat("x", i/26) + `", "value": 1}` + "\n")
	}
	_, err := parseMetrics(strings.NewReader(b.String()))
	if err == nil || !strings.Contains(err.Error(), "more than 10000 metrics") {
		t.Fatalf("got %v, want an error about too many metrics", err)
	}
}

func TestDataSize(t *testing.T) {
	tests := []struct {
		name    string
		metrics []metric
		samples uint64
		want    int32
		wantErr string
	}{
		{name: "shard samples", metrics: []metric{{"loss", 0.3}}, samples: 600, want: 600},
		{name: "no metrics, no samples", wantErr: "the training command reported no n_samples metric and the shard's sample count is 0"},
		{name: "other metrics, no samples", metrics: []metric{{"loss", 0.3}}, wantErr: "no n_samples metric"},
		{name: "shard samples capped", samples: math.MaxInt32 + 10, want: math.MaxInt32},
		{name: "n_samples wins", metrics: []metric{{"loss", 0.3}, {"n_samples", 42}}, samples: 600, want: 42},
		{name: "n_samples zero", metrics: []metric{{"n_samples", 0}}, samples: 600, wantErr: "metric n_samples is 0: want a whole number from 1 to 2147483647"},
		{name: "n_samples one", metrics: []metric{{"n_samples", 1}}, want: 1},
		{name: "n_samples max", metrics: []metric{{"n_samples", math.MaxInt32}}, want: math.MaxInt32},
		{name: "n_samples negative", metrics: []metric{{"n_samples", -1}}, wantErr: "metric n_samples is -1: want a whole number from 1 to 2147483647"},
		{name: "n_samples fraction", metrics: []metric{{"n_samples", 2.5}}, wantErr: "metric n_samples is 2.5"},
		{name: "n_samples too large", metrics: []metric{{"n_samples", math.MaxInt32 + 1}}, wantErr: "want a whole number"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := dataSize(tt.metrics, tt.samples)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("got error %v, want none", err)
			}
			if got != tt.want {
				t.Errorf("got %d, want %d", got, tt.want)
			}
		})
	}
}
