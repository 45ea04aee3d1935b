package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/olekukonko/tablewriter"
	"github.com/olekukonko/tablewriter/tw"

	"github.com/fedplane/fedplane/cmd/internal/cli"
)

// runFladminTTY runs fladmin with stdout taken for a terminal or not.
func runFladminTTY(tb testing.TB, addr string, tty bool, args ...string) (stdout, stderr string, code int) {
	tb.Helper()
	f := newFactory()
	var out, errb bytes.Buffer
	f.stdout, f.stderr = &out, &errb
	f.stdoutIsTerminal = func() bool { return tty }
	f.stderrIsTerminal = func() bool { return false }
	f.user = func() string { return "tester" }
	code = cli.Main(newRootCmd(f), append([]string{"--addr", addr, "--timeout", "5s"}, args...), &errb)
	return out.String(), errb.String(), code
}

// testFactory is a factory writing to buffers, stdout a terminal or not.
func testFactory(tty bool) (*factory, *bytes.Buffer, *bytes.Buffer) {
	f := newFactory()
	var out, errb bytes.Buffer
	f.stdout, f.stderr = &out, &errb
	f.stdoutIsTerminal = func() bool { return tty }
	return f, &out, &errb
}

// batchTable is what tablewriter draws for header and rows in one Render,
// headers as given.
func batchTable(t *testing.T, header []string, rows [][]string) string {
	t.Helper()
	var buf bytes.Buffer
	tb := tablewriter.NewTable(&buf, tablewriter.WithHeaderAutoFormat(tw.Off))
	tb.Header(header)
	if err := tb.Bulk(rows); err != nil {
		t.Fatal(err)
	}
	if err := tb.Render(); err != nil {
		t.Fatal(err)
	}
	return buf.String()
}

type tableCase struct {
	name   string
	header []string
	rows   [][]string
}

func tableCases() []tableCase {
	tables := []tableCase{
		{"envoys", []string{"NAME", "ONLINE", "LAST SEEN", "EXPERIMENT", "SAMPLES", "SHARD"},
			[][]string{{"site-a", "yes", "2026-11-22 09:00:00", "-", "1000", "hospital A"}, {"b", "no", "-", "-", "0", ""}}},
		{"wide header", []string{"A LONG HEADER", "X"}, [][]string{{"a", "bb"}, {"", "c"}}},
		{"odd centring", []string{"AB", "ABC"}, [][]string{{"abcde", "abcdef"}}},
		{"underscore header", []string{"ROUND", "N_SAMPLES"}, [][]string{{"0", "6000"}}},
		{"spaces", []string{"K"}, [][]string{{"x  y"}, {" lead"}, {"trail "}, {strings.Repeat("z", 300)}}},
		{"wide characters", []string{"SITE", "NOTE"}, [][]string{{"東京", "ok"}, {"é", "日本語のデータ"}}},
		{"line breaks", []string{"REASON"}, [][]string{{"first line\nsecond, longer line"}, {"x"}}},
		{"no rows", []string{"ONE", "TWO"}, nil},
	}
	rng := rand.New(rand.NewPCG(1, 2))
	const alphabet = "abcXYZ019 -_.:/|,;!~#é日"
	runes := []rune(alphabet)
	for n := range 40 {
		cols := 1 + rng.IntN(6)
		header := make([]string, cols)
		for i := range header {
			header[i] = strings.Repeat(string(rune('A'+i)), 1+rng.IntN(12))
		}
		var rows [][]string
		for range rng.IntN(8) {
			row := make([]string, cols)
			for i := range row {
				b := make([]rune, rng.IntN(20))
				for k := range b {
					b[k] = runes[rng.IntN(len(runes))]
				}
				row[i] = string(b)
			}
			rows = append(rows, row)
		}
		tables = append(tables, tableCase{fmt.Sprintf("random %d", n), header, rows})
	}
	return tables
}

// TestTableTerminal checks that a table on a terminal, streamed row by row
// with the widths columnWidths measures, is what tablewriter draws when it
// measures the whole table itself.
func TestTableTerminal(t *testing.T) {
	for _, tt := range tableCases() {
		t.Run(tt.name, func(t *testing.T) {
			f, out, _ := testFactory(true)
			if err := f.printTable(tt.header, tt.rows); err != nil {
				t.Fatal(err)
			}
			if want := batchTable(t, tt.header, tt.rows); out.String() != want {
				t.Fatalf("got\n%s\nwant\n%s", out.String(), want)
			}
		})
	}
}

func TestTablePiped(t *testing.T) {
	tests := []struct {
		name   string
		header []string
		rows   [][]string
		want   string
	}{
		{"rows", []string{"NAME", "LAST SEEN"}, [][]string{{"site-a", "2026-11-22 09:00:00"}, {"b", ""}},
			"NAME\tLAST SEEN\nsite-a\t2026-11-22 09:00:00\nb\t\n"},
		{"no rows", []string{"JOB ID", "NAME"}, nil, "JOB ID\tNAME\n"},
		{"tabs and line breaks", []string{"A", "B"}, [][]string{{"x\ty", "one\ntwo\r\n"}},
			"A\tB\nx y\tone two  \n"},
		{"kept as given", []string{"N_SAMPLES"}, [][]string{{"  6000 "}, {"日本"}}, "N_SAMPLES\n  6000 \n日本\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, out, _ := testFactory(false)
			if err := f.printTable(tt.header, tt.rows); err != nil {
				t.Fatal(err)
			}
			if out.String() != tt.want {
				t.Fatalf("got %q, want %q", out.String(), tt.want)
			}
		})
	}
}

// TestIsTerminal checks the one terminal test against what is not a
// terminal, /dev/null among them: it is a character device, which a check
// of the file mode took for a terminal.
func TestIsTerminal(t *testing.T) {
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	file, err := os.Create(t.TempDir() + "/out")
	if err != nil {
		t.Fatal(err)
	}
	defer file.Close()
	for name, w := range map[string]any{"/dev/null": null, "pipe": pw, "file": file, "buffer": &bytes.Buffer{}} {
		if isTerminal(w.(interface{ Write([]byte) (int, error) })) {
			t.Errorf("%s: got terminal, want not", name)
		}
	}
}

// TestListEnvoysOutput runs list-envoys against a canned reply, on a
// terminal and on a pipe.
func TestListEnvoysOutput(t *testing.T) {
	srv := startFakeAdmin(t, ok(map[string]any{"envoys": []any{
		map[string]any{"name": "site-a", "online": true, "lastSeen": "0001-01-01T00:00:00Z", "samples": 42, "shard": "hospital A"},
		map[string]any{"name": "site-b", "online": false, "experiment": "3f2a", "samples": 7, "cudaDevices": []any{
			map[string]any{"index": 0, "name": "T4", "memoryTotal": 16 << 30}, map[string]any{"index": 1}}},
	}}))
	out, stderr, code := runFladminTTY(t, srv.addr, false, "list-envoys")
	want := "NAME\tONLINE\tLAST SEEN\tEXPERIMENT\tSAMPLES\tGPU\tSHARD\n" +
		"site-a\tyes\t-\t-\t42\t-\thospital A\n" +
		"site-b\tno\t-\t3f2a\t7\tT4, cuda:1\t\n"
	if code != 0 || out != want {
		t.Fatalf("pipe: exit %d, stderr %q, stdout %q; want %q", code, stderr, out, want)
	}
	out, stderr, code = runFladminTTY(t, srv.addr, true, "list-envoys")
	want = batchTable(t, []string{"NAME", "ONLINE", "LAST SEEN", "EXPERIMENT", "SAMPLES", "GPU", "SHARD"},
		[][]string{{"site-a", "yes", "-", "-", "42", "-", "hospital A"}, {"site-b", "no", "-", "3f2a", "7", "T4, cuda:1", ""}})
	if code != 0 || out != want {
		t.Fatalf("terminal: exit %d, stderr %q, stdout\n%s\nwant\n%s", code, stderr, out, want)
	}
}
