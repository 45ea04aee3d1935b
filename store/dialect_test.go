package store

import (
	"reflect"
	"testing"
)

func TestNumberPlaceholders(t *testing.T) {
	tests := []struct {
		name, in, want string
	}{
		{"none", `SELECT 1`, `SELECT 1`},
		{"in order", `UPDATE t SET a = ?, b = ? WHERE c = ?`, `UPDATE t SET a = $1, b = $2 WHERE c = $3`},
		{"string literal", `SELECT '?', x FROM t WHERE y = ?`, `SELECT '?', x FROM t WHERE y = $1`},
		{"escaped quote", `SELECT 'it''s ?' WHERE a = ?`, `SELECT 'it''s ?' WHERE a = $1`},
		{"quoted identifier", `SELECT "a?b" FROM t WHERE c = ?`, `SELECT "a?b" FROM t WHERE c = $1`},
		{"line comment", "SELECT a -- why? because\nFROM t WHERE b = ?", "SELECT a -- why? because\nFROM t WHERE b = $1"},
		{"block comment", `SELECT /* ? */ a WHERE b = ?`, `SELECT /* ? */ a WHERE b = $1`},
		{"unterminated literal", `SELECT ? || 'a?`, `SELECT $1 || 'a?`},
		{"unterminated comment", `SELECT ? /* ?`, `SELECT $1 /* ?`},
		{"trailing line comment", `SELECT ? -- ?`, `SELECT $1 -- ?`},
		{"ten and more", `VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, `VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`},
		{"minus is not a comment", `SELECT a - ? FROM t`, `SELECT a - $1 FROM t`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := numberPlaceholders(tt.in); got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestDialectArgs(t *testing.T) {
	in := []any{true, false, "x", int64(3)}
	pg := dialect{postgres: true}.args(in)
	if want := []any{int64(1), int64(0), "x", int64(3)}; !reflect.DeepEqual(pg, want) {
		t.Fatalf("postgres args: got %v, want %v", pg, want)
	}
	if in[0] != true {
		t.Fatal("args changed the caller's slice")
	}
	if lite := (dialect{}).args(in); !reflect.DeepEqual(lite, in) {
		t.Fatalf("sqlite args: got %v, want %v", lite, in)
	}
}

func FuzzNumberPlaceholders(f *testing.F) {
	f.Add(`SELECT '?', ? -- ?` + "\n" + `/* ? */ "?"`)
	f.Add(`'''?`)
	f.Fuzz(func(t *testing.T, q string) {
		got := numberPlaceholders(q)
		if len(got) < len(q) {
			t.Fatalf("%q became shorter: %q", q, got)
		}
	})
}
