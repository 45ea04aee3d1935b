package job

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// Aggregator is job.json's "aggregator": how the director turns a round's
// reports into the next global model. ParseManifest fills in the defaults
// of every parameter the aggregator uses, so the stored job.json (and
// show-job) says exactly what runs; a parameter it does not use is an
// error. Without "aggregator" the job uses fedavg (DefaultAggregator).
type Aggregator struct {
	// Name is one of AggregatorNames.
	Name string `json:"name"`
	// Eta is the server learning rate (fedavgm, fedadam, fedyogi,
	// fedadagrad).
	Eta *float64 `json:"eta,omitempty"`
	// Momentum is fedavgm's server momentum.
	Momentum *float64 `json:"momentum,omitempty"`
	// Beta1, Beta2 are the decay rates of the first and second moments.
	Beta1 *float64 `json:"beta_1,omitempty"`
	Beta2 *float64 `json:"beta_2,omitempty"`
	// Tau is the adaptivity floor of fedadam, fedyogi and fedadagrad.
	Tau *float64 `json:"tau,omitempty"`
	// Trim is the fraction trimmed_mean drops at each end, per coordinate.
	Trim *float64 `json:"trim,omitempty"`
	// ClipNorm, when set, bounds the L2 norm of each site's update
	// (its model minus the global one) before aggregation. Any aggregator.
	ClipNorm *float64 `json:"clip_norm,omitempty"`
}

// DefaultAggregator is the aggregator of a job.json without one.
const DefaultAggregator = "fedavg"

// aggregatorParam is one parameter of an aggregator: its default and the
// check of its range.
type aggregatorParam struct {
	def   float64
	check func(float64) string // "" when v is in range, else what it must be
}

func positive(v float64) string {
	if v > 0 {
		return ""
	}
	return "greater than 0"
}

func unitInterval(v float64) string {
	if v >= 0 && v < 1 {
		return ""
	}
	return "in [0, 1)"
}

func belowHalf(v float64) string {
	if v >= 0 && v < 0.5 {
		return ""
	}
	return "in [0, 0.5)"
}

// aggregatorParams lists, per aggregator, the parameters it takes (besides
// clip_norm, which they all take) and their defaults: Flower's for its
// strategies of the same names, but fedavgm's momentum (Flower's is 0,
// which makes fedavgm fedavg) and a trim of 0.2 (Flower's FedTrimmedAvg).
var aggregatorParams = map[string]map[string]aggregatorParam{
	"fedavg": {},
	"fedavgm": {
		"eta":      {1, positive},
		"momentum": {0.9, unitInterval},
	},
	"fedadam": {
		"eta":    {0.1, positive},
		"beta_1": {0.9, unitInterval},
		"beta_2": {0.99, unitInterval},
		"tau":    {1e-9, positive},
	},
	"fedyogi": {
		"eta":    {0.01, positive},
		"beta_1": {0.9, unitInterval},
		"beta_2": {0.99, unitInterval},
		"tau":    {1e-3, positive},
	},
	"fedadagrad": {
		"eta":    {0.1, positive},
		"beta_1": {0, unitInterval},
		"tau":    {1e-9, positive},
	},
	"median":       {},
	"trimmed_mean": {"trim": {0.2, belowHalf}},
}

// AggregatorNames are the aggregators job.json may name, sorted.
func AggregatorNames() []string {
	names := make([]string, 0, len(aggregatorParams))
	for n := range aggregatorParams {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// params maps each parameter key to its field.
func (a *Aggregator) params() map[string]**float64 {
	return map[string]**float64{"eta": &a.Eta, "momentum": &a.Momentum, "beta_1": &a.Beta1,
		"beta_2": &a.Beta2, "tau": &a.Tau, "trim": &a.Trim, "clip_norm": &a.ClipNorm}
}

// normalize checks a and fills in the defaults of the parameters its
// aggregator takes.
func (a *Aggregator) normalize() error {
	takes, ok := aggregatorParams[a.Name]
	if !ok {
		return manifestErrf(nil, `"aggregator.name" %q is not one of %s`, a.Name, strings.Join(AggregatorNames(), ", "))
	}
	fields := a.params()
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		f := fields[k]
		if *f != nil && (math.IsNaN(**f) || math.IsInf(**f, 0)) {
			return manifestErrf(nil, `"aggregator.%s" must be a finite number`, k)
		}
		if k == "clip_norm" {
			if *f != nil && !(**f > 0) {
				return manifestErrf(nil, `"aggregator.clip_norm" must be greater than 0, got %v`, **f)
			}
			continue
		}
		p, used := takes[k]
		switch {
		case !used && *f != nil:
			return manifestErrf(nil, `"aggregator.%s" is not a parameter of %s`, k, a.Name)
		case !used:
		case *f == nil:
			v := p.def
			*f = &v
		default:
			if want := p.check(**f); want != "" {
				return manifestErrf(nil, `"aggregator.%s" must be %s, got %v`, k, want, **f)
			}
		}
	}
	return nil
}

// Float returns *p, or 0 when p is nil: the value of a normalised
// parameter, 0 for one its aggregator does not take.
func Float(p *float64) float64 {
	if p == nil {
		return 0
	}
	return *p
}

// String is the aggregator and its parameters, as show-job prints them.
func (a *Aggregator) String() string {
	var b strings.Builder
	b.WriteString(a.Name)
	fields := a.params()
	for _, k := range []string{"eta", "momentum", "beta_1", "beta_2", "tau", "trim", "clip_norm"} {
		if f := *fields[k]; f != nil {
			fmt.Fprintf(&b, " %s=%v", k, *f)
		}
	}
	return b.String()
}
