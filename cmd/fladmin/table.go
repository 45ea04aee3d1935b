package main

import (
	"bufio"
	"strings"

	"github.com/olekukonko/tablewriter"
	"github.com/olekukonko/tablewriter/pkg/twwidth"
	"github.com/olekukonko/tablewriter/tw"
)

// fladmin prints a table in one of two ways, decided by whether stdout is
// a terminal (factory.stdoutIsTerminal). On a terminal tablewriter draws a
// boxed table. Otherwise fladmin writes tab-separated lines: the header,
// then one line per row, without padding or box drawing, as gh does when
// piped, so that `cut -f1` or `awk -F'\t'` can read them. The cells are the
// same either way.

// table writes one table row by row. On a terminal tablewriter draws it in
// its streaming mode with column widths fixed when the table starts, so
// that a table of 10,000 envoys is drawn as it goes rather than held and
// measured again by tablewriter, and `metrics --follow` can add a row as
// each round ends.
type table struct {
	bw     *bufio.Writer
	tw     *tablewriter.Table // nil when writing tab-separated lines
	follow bool
}

// newTable starts a table under header. widths are, on a terminal, the
// display widths of the columns' contents (see columnWidths). With follow,
// rows come after the widths were taken from the first ones: each row is
// written out as soon as it is added, and a cell wider than its column
// wraps within it rather than being cut short. Without, every cell must
// fit its column.
func (f *factory) newTable(header []string, widths []int, follow bool) (*table, error) {
	t := &table{bw: bufio.NewWriterSize(f.stdout, 64<<10), follow: follow}
	if !f.stdoutIsTerminal() {
		writeTSV(t.bw, header)
		return t, t.flushRow()
	}
	per := tw.NewMapper[int, int]()
	for i := range header {
		w := 0
		if i < len(widths) {
			w = widths[i]
		}
		per.Set(i, w+2) // a space of padding either side
	}
	// Wrapping also turns runs of spaces into one, which tablewriter does
	// not do to a table it measures itself: wrap only where a cell may not
	// fit.
	wrap := tw.WrapNone
	if follow {
		wrap = tw.WrapNormal
	}
	t.tw = tablewriter.NewTable(t.bw,
		tablewriter.WithStreaming(tw.StreamConfig{Enable: true, StrictColumns: true}),
		tablewriter.WithWidths(tw.CellWidth{PerColumn: per}),
		tablewriter.WithRowAutoWrap(wrap),
		// Headers print as given, as in the tab-separated header: upper
		// case already, and metric names keep their underscores.
		tablewriter.WithHeaderAutoFormat(tw.Off),
	)
	if err := t.tw.Start(); err != nil {
		return nil, err
	}
	t.tw.Header(header)
	return t, t.flushRow()
}

// append adds a row.
func (t *table) append(cells []string) error {
	if t.tw == nil {
		writeTSV(t.bw, cells)
	} else if err := t.tw.Append(cells); err != nil {
		return err
	}
	return t.flushRow()
}

func (t *table) flushRow() error {
	if t.follow {
		return t.bw.Flush()
	}
	return nil
}

// close ends the table (a boxed one's bottom border) and flushes it.
func (t *table) close() error {
	if t.tw != nil {
		if err := t.tw.Close(); err != nil {
			t.bw.Flush()
			return err
		}
	}
	return t.bw.Flush()
}

// printTable prints a whole table; on a terminal its columns are as wide as
// their widest cell.
func (f *factory) printTable(header []string, rows [][]string) error {
	var widths []int
	if f.stdoutIsTerminal() {
		widths = columnWidths(header, rows)
	}
	t, err := f.newTable(header, widths, false)
	if err != nil {
		return err
	}
	return t.appendAll(rows)
}

// appendAll adds rows and ends the table.
func (t *table) appendAll(rows [][]string) error {
	for _, r := range rows {
		if err := t.append(r); err != nil {
			t.close()
			return err
		}
	}
	return t.close()
}

// columnWidths returns the display width of each column's widest cell,
// header included, measured as tablewriter draws cells (see cellWidth).
func columnWidths(header []string, rows [][]string) []int {
	w := make([]int, len(header))
	for i, h := range header {
		w[i] = cellWidth(h)
	}
	for _, r := range rows {
		for i, c := range r {
			if i < len(w) {
				w[i] = max(w[i], cellWidth(c))
			}
		}
	}
	return w
}

// cellWidth is the width tablewriter gives s: trimmed, tabs expanded, the
// widest of its lines in terminal columns (wide characters count two).
func cellWidth(s string) int {
	s = strings.TrimSpace(s)
	if strings.Contains(s, "\t") {
		s = strings.ReplaceAll(s, "\t", strings.Repeat(" ", twwidth.TabWidth()))
	}
	if !strings.Contains(s, "\n") {
		return twwidth.Width(s)
	}
	w := 0
	for line := range strings.SplitSeq(s, "\n") {
		w = max(w, twwidth.Width(line))
	}
	return w
}

// writeTSV writes cells as one tab-separated line. A tab or line break
// inside a cell would split it, so it becomes a space.
func writeTSV(bw *bufio.Writer, cells []string) {
	for i, c := range cells {
		if i > 0 {
			bw.WriteByte('\t')
		}
		if strings.ContainsAny(c, "\t\r\n") {
			c = strings.Map(func(r rune) rune {
				if r == '\t' || r == '\r' || r == '\n' {
					return ' '
				}
				return r
			}, c)
		}
		bw.WriteString(c)
	}
	bw.WriteByte('\n')
}
