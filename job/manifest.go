package job

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"time"

	"github.com/fedplane/fedplane/api"
)

const (
	// ManifestFile is the name of the job description at the top of a job folder.
	ManifestFile = "job.json"
	// ModelFile is the initial global model in a job folder.
	ModelFile = "model.safetensors"
	// DefaultTrainTimeout bounds one run of the training command when job.json
	// does not say otherwise.
	DefaultTrainTimeout = 30 * time.Minute
	// MaxManifestSize is the largest job.json accepted, in bytes.
	MaxManifestSize = 1 << 20
)

const (
	maxRounds = 1_000_000
)

// Manifest is job.json: what to train, where, and for how long.
type Manifest struct {
	// Name is a label for people; it need not be unique.
	Name string `json:"name"`
	// Envoys names the envoys to train on. Exactly one of Envoys and
	// MinEnvoys is set.
	Envoys []string `json:"envoys,omitempty"`
	// MinEnvoys asks for that many of the online envoys, whichever they are.
	MinEnvoys int `json:"min_envoys,omitempty"`
	// Rounds is the number of federated rounds.
	Rounds int `json:"rounds"`
	// Train is the training command every envoy runs once per round.
	Train Train `json:"train"`
	// BestMetric, if set, names the metric that picks the best model.
	BestMetric *BestMetric `json:"best_metric,omitempty"`
	// MinEnvoysPerRound is the quorum that lets a round finish at its
	// deadline without every envoy; 0 means all of them.
	MinEnvoysPerRound int `json:"min_envoys_per_round,omitempty"`
	// RoundTimeout is the round's deadline; 0 means the default,
	// RoundDeadline's.
	RoundTimeout Duration `json:"round_timeout,omitempty"`
	// ParticipantsPerRound samples the envoys that train each round: a
	// count (3) or a fraction of the participants (0.5, rounded up), as
	// Flower's fraction_fit; 0 means every participant, every round.
	ParticipantsPerRound float64 `json:"participants_per_round,omitempty"`
	// SamplingSeed seeds the sampling; when left out the director derives
	// one from the job id. The same seed over the same online envoys picks
	// the same sample, so a run can be replayed.
	SamplingSeed *int64 `json:"sampling_seed,omitempty"`
	// KeepModels says which round models the director keeps on disk;
	// empty means the default, KeepBest.
	KeepModels KeepModels `json:"keep_models,omitempty"`
	// Description is free text for people.
	Description string `json:"description,omitempty"`
	// Aggregator is how reports become the next model, with its defaults
	// filled in by ParseManifest; nil means fedavg.
	Aggregator *Aggregator `json:"aggregator,omitempty"`
	// OpenFL, set for an OpenFL workspace (ParsePlan), is its plan's task
	// group. Such a job has no train.command: OpenFL's collaborators run
	// it, never fedplane's envoy.
	OpenFL *OpenFL `json:"openfl,omitempty"`
}

// Train is how an envoy runs one round of local training.
type Train struct {
	// Command is the program and its arguments, run without a shell in the
	// unpacked job folder.
	Command []string `json:"command"`
	// Timeout bounds one run; ParseManifest sets DefaultTrainTimeout when
	// job.json leaves it out.
	Timeout Duration `json:"timeout,omitempty"`
}

// BestMetric names the metric that decides which round's model is best.
type BestMetric struct {
	Name string `json:"name"`
	// Mode is "max" when a higher value is better, "min" when a lower one is.
	Mode string `json:"mode"`
}

// Duration is a time.Duration written in JSON as a Go duration string
// such as "30m" or "1h30m".
type Duration time.Duration

// String returns the duration in time.Duration's notation.
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes d as a duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a duration string; null leaves d unchanged.
func (d *Duration) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"30m\", got %s", b)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("invalid duration %q", s)
	}
	*d = Duration(v)
	return nil
}

// Participants is the number of envoys the job trains on: the length of
// Envoys, or MinEnvoys.
func (m *Manifest) Participants() int {
	if len(m.Envoys) > 0 {
		return len(m.Envoys)
	}
	return m.MinEnvoys
}

// ParseManifest decodes job.json strictly (one JSON object, no unknown or
// repeated keys, the right type for every value), fills in defaults and
// validates the result. Its errors start with "job.json: ", name the key at
// fault, and wrap ErrInvalid.
func ParseManifest(b []byte) (*Manifest, error) {
	if len(b) > MaxManifestSize {
		return nil, manifestErrf(nil, "%d bytes exceeds the limit of %s", len(b), formatSize(MaxManifestSize))
	}
	b = bytes.TrimPrefix(b, []byte("\xef\xbb\xbf")) // a BOM some editors write
	if err := checkJSON(b); err != nil {
		return nil, err
	}
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		// checkJSON has already checked keys and types, so this is a
		// disagreement between it and encoding/json; still say what we can.
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, manifestErrf(err, "%q must be %s, got %s", te.Field, typeName(te.Type.Kind().String()), te.Value)
		}
		return nil, manifestErrf(err, "%v", err)
	}
	if m.Train.Timeout == 0 {
		m.Train.Timeout = Duration(DefaultTrainTimeout)
	}
	if m.Aggregator != nil {
		if err := m.Aggregator.normalize(); err != nil {
			return nil, err
		}
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

func typeName(kind string) string {
	switch kind {
	case "int", "int64", "int32":
		return "a number"
	case "slice":
		return "a list"
	case "struct", "ptr":
		return "an object"
	}
	return "a " + kind
}

func manifestErrf(err error, format string, args ...any) error {
	return &manifestError{file: ManifestFile, msg: fmt.Sprintf(format, args...), err: err}
}

// Validate checks m against the rules of job.json. It does not fill in
// defaults, so a zero Train.Timeout is an error here.
func (m *Manifest) Validate() error {
	if err := checkJobName(m.Name); err != nil {
		return err
	}

	switch {
	case m.MinEnvoys < 0:
		return manifestErrf(nil, `"min_envoys" must be at least 1, got %d`, m.MinEnvoys)
	case m.Envoys != nil && m.MinEnvoys != 0:
		return manifestErrf(nil, `"envoys" and "min_envoys" are both set; set one of them`)
	case m.Envoys == nil && m.MinEnvoys == 0:
		return manifestErrf(nil, `neither "envoys" nor "min_envoys" is set; list the envoys or say how many to use`)
	case m.Envoys != nil && len(m.Envoys) == 0:
		return manifestErrf(nil, `"envoys" is empty`)
	}
	seen := make(map[string]int, len(m.Envoys))
	for i, e := range m.Envoys {
		if err := api.ValidateName(fmt.Sprintf(`"envoys[%d]"`, i), e); err != nil {
			return manifestErrf(err, "%v", err)
		}
		if j, ok := seen[e]; ok {
			return manifestErrf(nil, `"envoys[%d]" %q repeats "envoys[%d]"`, i, e, j)
		}
		seen[e] = i
	}

	if m.Rounds < 1 {
		return manifestErrf(nil, `"rounds" must be at least 1, got %d`, m.Rounds)
	}
	if m.Rounds > maxRounds {
		return manifestErrf(nil, `"rounds" must be at most %d, got %d`, maxRounds, m.Rounds)
	}

	if m.OpenFL != nil {
		if len(m.Train.Command) > 0 {
			return manifestErrf(nil, `"train.command" is set for an OpenFL workspace, whose collaborators run its tasks`)
		}
		if err := m.OpenFL.validate(); err != nil {
			return manifestErrf(err, `"openfl": %v`, err)
		}
	} else if len(m.Train.Command) == 0 {
		return manifestErrf(nil, `"train.command" is empty`)
	} else if m.Train.Command[0] == "" {
		return manifestErrf(nil, `"train.command[0]" is empty; it names the program to run`)
	}
	if m.Train.Timeout <= 0 {
		return manifestErrf(nil, `"train.timeout" must be positive, got %v`, m.Train.Timeout)
	}

	if b := m.BestMetric; b != nil {
		if b.Name == "" {
			return manifestErrf(nil, `"best_metric.name" is empty`)
		}
		if b.Mode != "max" && b.Mode != "min" {
			return manifestErrf(nil, `"best_metric.mode" must be "max" or "min", got %q`, b.Mode)
		}
	}

	if m.MinEnvoysPerRound < 0 {
		return manifestErrf(nil, `"min_envoys_per_round" must not be negative, got %d`, m.MinEnvoysPerRound)
	}
	if n := m.Participants(); m.MinEnvoysPerRound > n {
		if m.Envoys != nil {
			return manifestErrf(nil, `"min_envoys_per_round" is %d, more than the %d listed in "envoys"`, m.MinEnvoysPerRound, n)
		}
		return manifestErrf(nil, `"min_envoys_per_round" is %d, more than "min_envoys" (%d)`, m.MinEnvoysPerRound, n)
	}
	if m.RoundTimeout < 0 {
		return manifestErrf(nil, `"round_timeout" must not be negative, got %v`, m.RoundTimeout)
	}
	if !m.KeepModels.valid() {
		return manifestErrf(nil, "%q must be %s, got %q", "keep_models", keepModelsValues, string(m.KeepModels))
	}
	if m.SamplingSeed != nil && *m.SamplingSeed < 0 {
		return manifestErrf(nil, `"sampling_seed" must not be negative, got %d`, *m.SamplingSeed)
	}
	if p := m.ParticipantsPerRound; p < 0 || math.IsNaN(p) || math.IsInf(p, 0) || (p > 1 && p != math.Trunc(p)) {
		return manifestErrf(nil, `"participants_per_round" must be a count (3) or a fraction of the participants (0.5), got %v`, p)
	}
	if p := m.ParticipantsPerRound; p > 1 && int(p) > m.Participants() {
		return manifestErrf(nil, `"participants_per_round" is %v, more than the job's %d participants`, p, m.Participants())
	}
	if p, q := m.PerRound(m.Participants()), m.MinEnvoysPerRound; m.ParticipantsPerRound > 0 && q > p {
		return manifestErrf(nil, `"min_envoys_per_round" is %d, more than the %d envoys "participants_per_round" samples each round`, q, p)
	}
	if m.Aggregator != nil {
		a := *m.Aggregator // normalize fills in defaults: check a copy
		if err := a.normalize(); err != nil {
			return err
		}
	}
	return nil
}

// RoundDeadlineGrace is what the default round deadline allows beyond
// train.timeout: fetching the model, sending the results.
const RoundDeadlineGrace = 10 * time.Minute

// RoundDeadline is how long a round may take: round_timeout, or by
// default train.timeout plus RoundDeadlineGrace, so that no round waits
// forever on an envoy that heartbeats but never reports.
func (m *Manifest) RoundDeadline() time.Duration {
	if m.RoundTimeout > 0 {
		return time.Duration(m.RoundTimeout)
	}
	t := time.Duration(m.Train.Timeout)
	if t <= 0 {
		t = DefaultTrainTimeout
	}
	return t + RoundDeadlineGrace
}

// PerRound is how many of n participants train each round
// (participants_per_round: a count, or a fraction rounded up; all of them
// when unset), at least 1 and at most n.
func (m *Manifest) PerRound(n int) int {
	p := m.ParticipantsPerRound
	k := n
	switch {
	case p <= 0:
	case p <= 1:
		k = int(math.Ceil(p * float64(n)))
	default:
		k = int(p)
	}
	return max(1, min(k, n))
}

// Quorum is the reports a round of k sampled envoys needs to close:
// min_envoys_per_round, or all k when unset; never more than k.
func (m *Manifest) Quorum(k int) int {
	if q := m.MinEnvoysPerRound; q > 0 {
		return min(q, k)
	}
	return k
}

func checkJobName(name string) error {
	switch {
	case name == "":
		return manifestErrf(nil, `"name" is empty`)
	case len(name) > api.MaxNameLen:
		return manifestErrf(nil, `"name" is longer than %d bytes`, api.MaxNameLen)
	}
	for _, r := range name {
		if !isJobNameChar(r) {
			return manifestErrf(nil, `"name" %q may contain only letters, digits, '.', '_', '-' and spaces`, name)
		}
	}
	switch {
	case name[0] == '.':
		return manifestErrf(nil, `"name" %q must not start with a dot`, name)
	case name[0] == ' ' || name[len(name)-1] == ' ':
		return manifestErrf(nil, `"name" %q must not start or end with a space`, name)
	}
	return nil
}

func isAlnum(r rune) bool {
	return 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9'
}

func isJobNameChar(r rune) bool {
	return isAlnum(r) || r == '.' || r == '_' || r == ' ' || r == '-'
}

// jsonKind is what a key of job.json must hold.
type jsonKind int

const (
	kindObject jsonKind = iota
	kindString
	kindInt
	kindStrings
	kindDuration
	kindBool
	kindObjects
	kindNumber
	kindKeepModels
)

func (k jsonKind) String() string {
	switch k {
	case kindObject:
		return "an object"
	case kindString:
		return "a string"
	case kindInt:
		return "a number"
	case kindStrings:
		return "a list of strings"
	case kindDuration:
		return `a duration string like "30m"`
	case kindBool:
		return "true or false"
	case kindObjects:
		return "a list of objects"
	case kindNumber:
		return "a number"
	case kindKeepModels:
		return keepModelsValues
	}
	return "?"
}

// manifestKeys lists every key job.json may hold, by dotted path, with the
// kind of value it takes. It must agree with the json tags of Manifest.
var manifestKeys = map[string]jsonKind{
	"name":                   kindString,
	"envoys":                 kindStrings,
	"min_envoys":             kindInt,
	"rounds":                 kindInt,
	"train":                  kindObject,
	"train.command":          kindStrings,
	"train.timeout":          kindDuration,
	"best_metric":            kindObject,
	"best_metric.name":       kindString,
	"best_metric.mode":       kindString,
	"min_envoys_per_round":   kindInt,
	"round_timeout":          kindDuration,
	"participants_per_round": kindNumber,
	"sampling_seed":          kindInt,
	"keep_models":            kindKeepModels,
	"description":            kindString,
	"aggregator":             kindObject,
	"aggregator.name":        kindString,
	"aggregator.eta":         kindNumber,
	"aggregator.momentum":    kindNumber,
	"aggregator.beta_1":      kindNumber,
	"aggregator.beta_2":      kindNumber,
	"aggregator.tau":         kindNumber,
	"aggregator.trim":        kindNumber,
	"aggregator.clip_norm":   kindNumber,
	// What ParsePlan reads from an OpenFL workspace, as the director
	// stores it.
	"openfl":                     kindObject,
	"openfl.tasks":               kindObjects,
	"openfl.tasks[].name":        kindString,
	"openfl.tasks[].function":    kindString,
	"openfl.tasks[].type":        kindString,
	"openfl.tasks[].apply_local": kindBool,
	"openfl.delta_updates":       kindBool,
}

// checkJSON walks the tokens of job.json before it is decoded. encoding/json
// alone would accept keys in any letter case, let a repeated key silently
// win, and report unknown keys and bad durations without saying where; this
// walk refuses all of those with the key's full path.
func checkJSON(b []byte) error {
	w := &jsonWalker{b: b, dec: json.NewDecoder(bytes.NewReader(b))}
	w.dec.UseNumber()
	t, err := w.token()
	if err == io.EOF {
		return manifestErrf(nil, "the file is empty")
	}
	if err != nil {
		return err
	}
	if t != json.Delim('{') {
		return manifestErrf(nil, "must be a JSON object, got %s", tokenKind(t))
	}
	if err := w.object(""); err != nil {
		return err
	}
	if _, err := w.token(); err != io.EOF {
		if err != nil {
			return err
		}
		line, col := w.position(w.dec.InputOffset())
		return manifestErrf(nil, "not valid JSON: line %d, column %d: more data after the object", line, col)
	}
	return nil
}

type jsonWalker struct {
	b   []byte
	dec *json.Decoder
}

// token returns the next token; io.EOF only at the end of the input, any
// other failure as a manifest error.
func (w *jsonWalker) token() (json.Token, error) {
	t, err := w.dec.Token()
	if err == nil || err == io.EOF {
		return t, err
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		line, col := w.position(se.Offset)
		return nil, manifestErrf(err, "not valid JSON: line %d, column %d: %v", line, col, se)
	}
	return nil, manifestErrf(err, "not valid JSON: %v", err)
}

// mustToken is token for places where the end of input is an error.
func (w *jsonWalker) mustToken() (json.Token, error) {
	t, err := w.token()
	if err == io.EOF {
		return nil, manifestErrf(io.ErrUnexpectedEOF, "not valid JSON: unexpected end of input")
	}
	return t, err
}

// position turns a byte offset into a 1-based line and column.
func (w *jsonWalker) position(off int64) (line, col int) {
	off = min(max(off, 0), int64(len(w.b)))
	before := w.b[:off]
	line = 1 + bytes.Count(before, []byte("\n"))
	col = int(off) - bytes.LastIndexByte(before, '\n')
	return line, col
}

// object walks the members of an object whose '{' has been read.
func (w *jsonWalker) object(prefix string) error {
	seen := map[string]bool{}
	for w.dec.More() {
		t, err := w.mustToken()
		if err != nil {
			return err
		}
		key, ok := t.(string)
		if !ok {
			return manifestErrf(nil, "not valid JSON: object key is %s", tokenKind(t))
		}
		path := key
		if prefix != "" {
			path = prefix + "." + key
		}
		kind, ok := manifestKeys[path]
		if !ok {
			return manifestErrf(nil, "unknown key %q", path)
		}
		if seen[key] {
			return manifestErrf(nil, "key %q appears twice", path)
		}
		seen[key] = true
		if err := w.value(path, kind); err != nil {
			return err
		}
	}
	_, err := w.mustToken() // '}'
	return err
}

func (w *jsonWalker) value(path string, kind jsonKind) error {
	t, err := w.mustToken()
	if err != nil {
		return err
	}
	wrongType := func(path string, kind jsonKind, t json.Token) error {
		return manifestErrf(nil, "%q must be %v, got %s", path, kind, tokenKind(t))
	}
	switch kind {
	case kindObject:
		if t != json.Delim('{') {
			return wrongType(path, kind, t)
		}
		return w.object(path)
	case kindString:
		if _, ok := t.(string); !ok {
			return wrongType(path, kind, t)
		}
	case kindInt:
		n, ok := t.(json.Number)
		if !ok {
			return wrongType(path, kind, t)
		}
		if _, err := strconv.ParseInt(string(n), 10, 0); err != nil {
			if errors.Is(err, strconv.ErrRange) {
				return manifestErrf(nil, "%q is out of range, got %s", path, n)
			}
			return manifestErrf(nil, "%q must be a whole number, got %s", path, n)
		}
	case kindNumber:
		n, ok := t.(json.Number)
		if !ok {
			return wrongType(path, kind, t)
		}
		if f, err := strconv.ParseFloat(string(n), 64); err != nil || math.IsInf(f, 0) {
			return manifestErrf(nil, "%q is out of range, got %s", path, n)
		}
	case kindDuration:
		s, ok := t.(string)
		if !ok {
			return wrongType(path, kind, t)
		}
		if _, err := time.ParseDuration(s); err != nil {
			return manifestErrf(nil, "%q: invalid duration %q (use a form like \"90s\", \"30m\" or \"1h30m\")", path, s)
		}
	case kindBool:
		if _, ok := t.(bool); !ok {
			return wrongType(path, kind, t)
		}
	case kindKeepModels:
		// A word or a count: one key, two JSON types.
		switch v := t.(type) {
		case string:
			if k := KeepModels(v); v == "" || validKeepCount(v) || !k.valid() {
				return manifestErrf(nil, "%q must be %s, got %q", path, kind, v)
			}
		case json.Number:
			if !validKeepCount(string(v)) {
				return manifestErrf(nil, "%q must be %s, got %s", path, kind, v)
			}
		default:
			return wrongType(path, kind, t)
		}
	case kindObjects:
		if t != json.Delim('[') {
			return wrongType(path, kind, t)
		}
		for i := 0; w.dec.More(); i++ {
			t, err := w.mustToken()
			if err != nil {
				return err
			}
			if t != json.Delim('{') {
				return wrongType(fmt.Sprintf("%s[%d]", path, i), kindObject, t)
			}
			if err := w.object(path + "[]"); err != nil {
				return err
			}
		}
		_, err := w.mustToken() // ']'
		return err
	case kindStrings:
		if t != json.Delim('[') {
			return wrongType(path, kind, t)
		}
		for i := 0; w.dec.More(); i++ {
			t, err := w.mustToken()
			if err != nil {
				return err
			}
			if _, ok := t.(string); !ok {
				return wrongType(fmt.Sprintf("%s[%d]", path, i), kindString, t)
			}
		}
		_, err := w.mustToken() // ']'
		return err
	}
	return nil
}

// tokenKind names the JSON type of a token for error messages.
func tokenKind(t json.Token) string {
	switch v := t.(type) {
	case json.Delim:
		switch v {
		case '{':
			return "object"
		case '[':
			return "array"
		}
		return "'" + v.String() + "'"
	case string:
		return "string"
	case json.Number:
		return "number"
	case bool:
		return "boolean"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", t)
}
