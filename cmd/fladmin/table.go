package main

import (
	"bufio"
	"io"
	"strings"

	"github.com/olekukonko/tablewriter"
)

// plainTableMinRows is the row count from which printTable draws a plain
// table itself rather than through tablewriter. tablewriter spends about
// 10 µs a row on cell contexts and width caches, a tenth of a second for
// `list-envoys` with 10,000 envoys; drawing the same bytes (TestPlainTable
// compares them with tablewriter's) takes a few milliseconds.
const plainTableMinRows = 100

// printTable writes a header and rows as a boxed table.
func (f *factory) printTable(header []string, rows [][]string) error {
	if len(rows) >= plainTableMinRows && plainTable(header, rows) {
		return writePlainTable(f.stdout, header, rows)
	}
	t := tablewriter.NewWriter(f.stdout)
	t.Header(header)
	if err := t.Bulk(rows); err != nil {
		return err
	}
	return t.Render()
}

// plainTable reports whether every cell is one that tablewriter prints as
// it is, one byte a column: printable ASCII without leading or trailing
// spaces (no tabs, newlines or wide characters to expand or wrap), and
// headers already in the upper case tablewriter puts them in.
func plainTable(header []string, rows [][]string) bool {
	for _, h := range header {
		if h == "" || !plainCell(h) || strings.ToUpper(h) != h || strings.ContainsAny(h, "_.") {
			return false
		}
	}
	for _, r := range rows {
		if len(r) != len(header) {
			return false
		}
		for _, c := range r {
			if !plainCell(c) {
				return false
			}
		}
	}
	return true
}

func plainCell(s string) bool {
	if s == "" {
		return true
	}
	if s[0] == ' ' || s[len(s)-1] == ' ' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}

// writePlainTable draws what tablewriter's default renderer draws for a
// plainTable: a box of light lines, the header centred, cells left-aligned,
// one space of padding on each side.
func writePlainTable(w io.Writer, header []string, rows [][]string) error {
	widths := make([]int, len(header))
	for i, h := range header {
		widths[i] = len(h)
	}
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], len(c))
		}
	}
	bw := bufio.NewWriterSize(w, 64<<10)
	rule := func(left, mid, right string) {
		bw.WriteString(left)
		for i, wd := range widths {
			if i > 0 {
				bw.WriteString(mid)
			}
			for range wd + 2 {
				bw.WriteString("─")
			}
		}
		bw.WriteString(right)
		bw.WriteByte('\n')
	}
	pad := func(n int) {
		for range n {
			bw.WriteByte(' ')
		}
	}
	rule("┌", "┬", "┐")
	bw.WriteString("│")
	for i, h := range header {
		left := (widths[i] - len(h)) / 2
		pad(1 + left)
		bw.WriteString(h)
		pad(widths[i] - len(h) - left + 1)
		bw.WriteString("│")
	}
	bw.WriteByte('\n')
	if len(rows) > 0 {
		rule("├", "┼", "┤")
	}
	for _, r := range rows {
		bw.WriteString("│")
		for i, c := range r {
			bw.WriteByte(' ')
			bw.WriteString(c)
			pad(widths[i] - len(c) + 1)
			bw.WriteString("│")
		}
		bw.WriteByte('\n')
	}
	rule("└", "┴", "┘")
	return bw.Flush()
}
