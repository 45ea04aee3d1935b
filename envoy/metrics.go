package envoy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"strconv"

	"github.com/fedplane/fedplane/tensor"
)

const (
	// metricSamples is the metric in which a training command may say how
	// many samples it trained on: the FedAvg weight of its results.
	metricSamples = "n_samples"
	// maxMetricLine bounds one line of the metrics file.
	maxMetricLine = 64 << 10
	// maxMetrics bounds the metrics of one round.
	maxMetrics = 10_000
)

// metric is one line of a metrics file. The value is kept as parsed so that
// n_samples can be checked to be a whole number before it becomes a float32.
type metric struct {
	name  string
	value float64
}

// readMetrics parses the metrics file at path, which must be a regular file
// of owner's when owner is set (openProduced); a missing file means no
// metrics.
func readMetrics(path string, owner *account) ([]metric, error) {
	f, _, err := openProduced(path, owner)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	defer f.Close()
	return parseMetrics(f)
}

// parseMetrics parses one JSON object per line, {"name": "...", "value": 0.9};
// blank lines are skipped, other keys ignored. A name must be unique, at
// most tensor.MaxNameLen bytes, and the value a number that fits a float32.
// Errors name the line: "metrics line 2: ...".
func parseMetrics(r io.Reader) ([]metric, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4<<10), maxMetricLine)
	var (
		out  []metric
		seen = map[string]int{} // name -> line
		line int
	)
	for sc.Scan() {
		line++
		b := sc.Bytes()
		if len(bytes.TrimSpace(b)) == 0 {
			continue
		}
		m, err := parseMetric(b)
		if err != nil {
			return nil, fmt.Errorf("metrics line %d: %w", line, err)
		}
		if prev, dup := seen[m.name]; dup {
			return nil, fmt.Errorf("metrics line %d: metric %q repeats line %d", line, m.name, prev)
		}
		if len(out) == maxMetrics {
			return nil, fmt.Errorf("metrics line %d: more than %d metrics", line, maxMetrics)
		}
		seen[m.name] = line
		out = append(out, m)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("metrics line %d: longer than %d bytes", line+1, maxMetricLine)
		}
		return nil, fmt.Errorf("metrics: %w", err)
	}
	return out, nil
}

func parseMetric(b []byte) (metric, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(b, &obj); err != nil || obj == nil {
		return metric{}, fmt.Errorf(`want a JSON object like {"name": "loss", "value": 0.5}, got %s`, quoteLine(b))
	}
	var m metric
	raw, ok := obj["name"]
	if !ok {
		return metric{}, errors.New(`"name" is missing`)
	}
	if err := json.Unmarshal(raw, &m.name); err != nil {
		return metric{}, fmt.Errorf(`"name" must be a string, got %s`, quoteLine(raw))
	}
	switch {
	case m.name == "":
		return metric{}, errors.New(`"name" is empty`)
	case len(m.name) > tensor.MaxNameLen:
		return metric{}, fmt.Errorf(`"name" is %d bytes long, at most %d allowed`, len(m.name), tensor.MaxNameLen)
	}
	raw, ok = obj["value"]
	if !ok {
		return metric{}, fmt.Errorf(`metric %q: "value" is missing`, m.name)
	}
	if err := json.Unmarshal(raw, &m.value); err != nil || string(raw) == "null" {
		return metric{}, fmt.Errorf(`metric %q: "value" must be a number, got %s`, m.name, quoteLine(raw))
	}
	if math.Abs(m.value) > math.MaxFloat32 {
		return metric{}, fmt.Errorf(`metric %q: "value" %v does not fit a float32`, m.name, m.value)
	}
	return m, nil
}

// quoteLine shows at most 80 bytes of b in an error.
func quoteLine(b []byte) string {
	const n = 80
	if len(b) > n {
		return strconv.Quote(string(b[:n])) + "..."
	}
	return strconv.Quote(string(b))
}

// dataSize is the FedAvg weight of a round's results: the n_samples metric
// when the command reported it, else the shard's sample count. A weight
// below one is refused: results that weigh nothing would either vanish from
// the average or, all weighing nothing, leave the director dividing by
// zero, and either way the site's round would count without counting.
func dataSize(ms []metric, samples uint64) (int32, error) {
	for _, m := range ms {
		if m.name != metricSamples {
			continue
		}
		v := m.value
		if v < 1 || v > math.MaxInt32 || v != math.Trunc(v) {
			return 0, fmt.Errorf("metric %s is %v: want a whole number from 1 to %d", metricSamples, v, math.MaxInt32)
		}
		return int32(v), nil
	}
	if samples == 0 {
		return 0, fmt.Errorf("the training command reported no %s metric and the shard's sample count is 0: a result must weigh at least one sample", metricSamples)
	}
	return int32(min(samples, math.MaxInt32)), nil
}

// wireMetrics converts ms for the task results.
func wireMetrics(ms []metric) []tensor.Metric {
	out := make([]tensor.Metric, len(ms))
	for i, m := range ms {
		out[i] = tensor.Metric{Name: m.name, Value: float32(m.value)}
	}
	return out
}
