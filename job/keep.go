package job

import (
	"encoding/json"
	"fmt"
	"strconv"
)

// The words keep_models takes; a whole number N ≥ 1 is the fourth form.
const (
	// KeepLast keeps only the newest round model: the one the next round
	// trains from, or the final model.
	KeepLast KeepModels = "last"
	// KeepBest keeps the best round model (by best_metric) and the newest:
	// the default.
	KeepBest KeepModels = "best"
	// KeepAll keeps every round model, as fedplane did before keep_models.
	KeepAll KeepModels = "all"
)

// keepModelsValues says what keep_models takes, for error messages.
const keepModelsValues = `"last", "best", "all" or a whole number of rounds (at least 1)`

// KeepModels is job.json's keep_models: which global models of past rounds
// the director keeps on disk once a round is committed, so a long job's
// storage does not grow without bound. It is "last", "best", "all", or a
// whole number N ≥ 1 written as a JSON number: the newest N models and the
// best. The empty value is the default, "best". Whatever the rule, the
// director also keeps what a round in progress still reads (see the
// director's retention).
type KeepModels string

// Newest is how many of the newest round models the rule keeps; 0 means
// every one.
func (k KeepModels) Newest() int {
	switch k {
	case KeepAll:
		return 0
	case "", KeepLast, KeepBest:
		return 1
	}
	n, _ := strconv.Atoi(string(k))
	return n
}

// Best says whether the rule keeps the best round's model besides the newest.
func (k KeepModels) Best() bool {
	return k != KeepLast && k != KeepAll
}

// String is the rule as job.json writes it, the default spelt out.
func (k KeepModels) String() string {
	if k == "" {
		return string(KeepBest)
	}
	return string(k)
}

// valid says whether k is one of the forms keep_models takes.
func (k KeepModels) valid() bool {
	switch k {
	case "", KeepLast, KeepBest, KeepAll:
		return true
	}
	return validKeepCount(string(k))
}

// validKeepCount says whether s is a whole number of rounds of at least 1,
// written plainly (no sign, exponent or leading zero).
func validKeepCount(s string) bool {
	n, err := strconv.Atoi(s)
	return err == nil && n >= 1 && n <= maxRounds && strconv.Itoa(n) == s
}

// MarshalJSON writes a count as a JSON number and a word as a string.
func (k KeepModels) MarshalJSON() ([]byte, error) {
	if validKeepCount(string(k)) {
		return []byte(k), nil
	}
	return json.Marshal(string(k))
}

// UnmarshalJSON reads one of the words or a whole number of rounds; null
// leaves k unchanged.
func (k *KeepModels) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	v := KeepModels(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		if v = KeepModels(s); validKeepCount(s) {
			v = "" // a count is a number, not a string
		}
	}
	if v == "" || !v.valid() {
		return fmt.Errorf("keep_models must be %s, got %s", keepModelsValues, b)
	}
	*k = v
	return nil
}
