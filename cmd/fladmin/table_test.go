package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/olekukonko/tablewriter"
)

// tablewriterOutput renders header and rows the way small tables are, with
// tablewriter's defaults.
func tablewriterOutput(t *testing.T, header []string, rows [][]string) string {
	t.Helper()
	var buf bytes.Buffer
	tw := tablewriter.NewWriter(&buf)
	tw.Header(header)
	if err := tw.Bulk(rows); err != nil {
		t.Fatal(err)
	}
	if err := tw.Render(); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

// TestPlainTable checks that the plain renderer draws exactly what
// tablewriter draws, for fixed and random plain tables, so that a table
// looks the same whichever side of plainTableMinRows it falls.
func TestPlainTable(t *testing.T) {
	tables := []struct {
		name   string
		header []string
		rows   [][]string
	}{
		{"envoys", []string{"NAME", "ONLINE", "LAST SEEN", "EXPERIMENT", "SAMPLES", "SHARD"},
			[][]string{{"site-a", "yes", "2026-11-22 09:00:00", "-", "1000", "hospital A"}, {"b", "no", "-", "-", "0", ""}}},
		{"wide header", []string{"A LONG HEADER", "X"}, [][]string{{"a", "bb"}, {"", "c"}}},
		{"odd centring", []string{"AB", "ABC"}, [][]string{{"abcde", "abcdef"}}},
		{"inner spaces", []string{"K"}, [][]string{{"x  y"}, {"a b c d e f"}, {strings.Repeat("z", 300)}}},
		{"no rows", []string{"ONE", "TWO"}, nil},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	const alphabet = "abcXYZ019 -_.:/|,;!~#"
	for n := range 50 {
		cols := 1 + rng.IntN(6)
		header := make([]string, cols)
		for i := range header {
			header[i] = strings.Repeat(string(rune('A'+i)), 1+rng.IntN(12))
		}
		var rows [][]string
		for range rng.IntN(8) {
			row := make([]string, cols)
			for i := range row {
				b := make([]byte, rng.IntN(20))
				for k := range b {
					b[k] = alphabet[rng.IntN(len(alphabet))]
				}
				row[i] = strings.Trim(string(b), " ")
			}
			rows = append(rows, row)
		}
		tables = append(tables, struct {
			name   string
			header []string
			rows   [][]string
		}{fmt.Sprintf("random %d", n), header, rows})
	}
	for _, tt := range tables {
		t.Run(tt.name, func(t *testing.T) {
			if !plainTable(tt.header, tt.rows) {
				t.Fatalf("table is not plain")
			}
			var got bytes.Buffer
			if err := writePlainTable(&got, tt.header, tt.rows); err != nil {
				t.Fatal(err)
			}
			if want := tablewriterOutput(t, tt.header, tt.rows); got.String() != want {
				t.Fatalf("plain renderer drew\n%s\ntablewriter drew\n%s", got.String(), want)
			}
		})
	}
}

func TestPlainTableRefuses(t *testing.T) {
	tests := []struct {
		name   string
		header []string
		rows   [][]string
	}{
		{"lower-case header", []string{"name"}, nil},
		{"underscore header", []string{"LAST_SEEN"}, nil},
		{"leading space", []string{"A"}, [][]string{{" x"}}},
		{"trailing space", []string{"A"}, [][]string{{"x "}}},
		{"tab", []string{"A"}, [][]string{{"x\ty"}}},
		{"newline", []string{"A"}, [][]string{{"x\ny"}}},
		{"wide character", []string{"A"}, [][]string{{"日本"}}},
		{"accent", []string{"A"}, [][]string{{"é"}}},
		{"short row", []string{"A", "B"}, [][]string{{"x"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if plainTable(tt.header, tt.rows) {
				t.Fatalf("plainTable accepted %q %q", tt.header, tt.rows)
			}
		})
	}
}
