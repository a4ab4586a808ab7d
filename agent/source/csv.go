package source

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// CSVOptions say how to read a CSV file of samples, such as SKAB's.
type CSVOptions struct {
	// Delimiter separates fields; 0 detects ';', ',' or tab from the
	// header line.
	Delimiter rune
	// TimeColumn is the timestamp column; empty picks the first of
	// datetime, timestamp, time, ts, date (any case).
	TimeColumn string
	// TimeFormat is one of the Time* constants or a Go layout such as
	// SKABTimeLayout (default TimeAuto, which reads SKAB's datetime).
	TimeFormat string
	// Location is the zone of times without one (default UTC).
	Location *time.Location
	// Columns selects and orders the channels; empty means every numeric
	// column but the timestamp and the label columns, in file order.
	Columns []string
	// LabelColumns are columns that label rows rather than measure
	// anything; they are never channels, and ReadCSV returns them in
	// Table.Labels. Default: anomaly, changepoint.
	LabelColumns []string
}

// DefaultLabelColumns are SKAB's label columns.
var defaultLabelColumns = []string{"anomaly", "changepoint"}

var timeColumnNames = []string{"datetime", "timestamp", "time", "ts", "date"}

// Table is a whole CSV file of samples, read by ReadCSV: for evaluation on
// labelled data (SKAB), and for tests.
type Table struct {
	// Channels names the columns of Values.
	Channels []string
	// Times, Values, Lines and each Labels column have one entry per
	// good row.
	Times  []time.Time
	Values [][]float64
	// Labels holds the label columns present in the file (e.g.
	// "anomaly" → 0/1 per row).
	Labels map[string][]float64
	// Lines are the rows' line numbers in the file (the header is line 1).
	Lines []int
	// Bad lists the rows that were dropped and why.
	Bad []BadRow
}

// BadRow is a row that was dropped.
type BadRow struct {
	Line   int
	Reason DropReason
	Msg    string
}

// ReadCSV reads a whole CSV file of samples. A row with a missing field, a
// non-numeric or non-finite value or a bad timestamp is left out and listed
// in Table.Bad; a file without a header, without a timestamp column, or
// without a column that opts.Columns names is an error.
func ReadCSV(r io.Reader, opts CSVOptions) (*Table, error) {
	cr, err := newCSVReader(r, opts)
	if err != nil {
		return nil, err
	}
	t := &Table{Channels: cr.channels, Labels: map[string][]float64{}}
	for {
		vals := make([]float64, len(cr.channels))
		labels := make([]float64, len(cr.labels))
		ts, line, err := cr.next(vals, labels)
		if err == io.EOF {
			return t, nil
		}
		var re *rowError
		if errors.As(err, &re) {
			t.Bad = append(t.Bad, BadRow{Line: re.line, Reason: re.reason, Msg: re.msg})
			continue
		}
		if err != nil {
			return t, err
		}
		t.Times = append(t.Times, ts)
		t.Values = append(t.Values, vals)
		t.Lines = append(t.Lines, line)
		for i, l := range cr.labels {
			t.Labels[l] = append(t.Labels[l], labels[i])
		}
	}
}

// rowError is a bad row; reading can go on after it.
type rowError struct {
	line   int
	reason DropReason
	msg    string
}

func (e *rowError) Error() string {
	return fmt.Sprintf("line %d: %s: %s", e.line, e.reason, e.msg)
}

// csvReader streams the rows of a CSV file of samples.
type csvReader struct {
	r        *csv.Reader
	header   []string
	timeIdx  int
	chanIdx  []int
	labelIdx []int
	channels []string
	labels   []string
	tp       timeParser
	need     int // fields a row must have

	peeked []csvRow // rows read ahead to find the numeric columns
}

type csvRow struct {
	fields []string
	line   int
	err    error
}

// newCSVReader reads the header (and a few rows ahead when it has to
// find the numeric columns).
func newCSVReader(r io.Reader, opts CSVOptions) (*csvReader, error) {
	tp, err := newTimeParser(opts.TimeFormat, opts.Location)
	if err != nil {
		return nil, optErr("TimeFormat", "%v", err)
	}
	if delim := opts.Delimiter; delim == '"' || delim == '\r' || delim == '\n' || delim == utf8RuneError {
		return nil, optErr("Delimiter", "%q cannot separate fields", delim)
	}
	c, header, err := OpenCSV(r, opts.Delimiter)
	if err != nil {
		return nil, err
	}
	delim := c.Comma
	if len(header) > 0 {
		header[0] = strings.TrimPrefix(header[0], "\ufeff")
	}
	for i := range header {
		header[i] = strings.TrimSpace(header[i])
	}
	if looksLikeData(header, tp) {
		return nil, fmt.Errorf("no header row: the first line %q looks like data", strings.Join(header, string(delim)))
	}
	cr := &csvReader{r: c, header: header, tp: tp, timeIdx: -1}
	index := func(name string) int {
		for i, h := range header {
			if h == name {
				return i
			}
		}
		for i, h := range header {
			if strings.EqualFold(h, name) {
				return i
			}
		}
		return -1
	}
	if opts.TimeColumn != "" {
		if cr.timeIdx = index(opts.TimeColumn); cr.timeIdx < 0 {
			return nil, optErr("TimeColumn", "no column %q in header %q", opts.TimeColumn, header)
		}
	} else {
		for _, n := range timeColumnNames {
			if cr.timeIdx = index(n); cr.timeIdx >= 0 {
				break
			}
		}
		if cr.timeIdx < 0 {
			return nil, optErr("TimeColumn", "no timestamp column (none of %q) in header %q; name it", timeColumnNames, header)
		}
	}
	labelNames := opts.LabelColumns
	if labelNames == nil {
		labelNames = defaultLabelColumns
	}
	isLabel := map[int]bool{}
	for _, l := range labelNames {
		if i := index(l); i >= 0 && i != cr.timeIdx {
			isLabel[i] = true
			cr.labelIdx = append(cr.labelIdx, i)
			cr.labels = append(cr.labels, header[i])
		}
	}
	if len(opts.Columns) > 0 {
		for _, col := range opts.Columns {
			i := index(col)
			switch {
			case i < 0:
				return nil, optErr("Columns", "no column %q in header %q", col, header)
			case i == cr.timeIdx:
				return nil, optErr("Columns", "%q is the timestamp column", col)
			case slices.Contains(cr.chanIdx, i):
				return nil, optErr("Columns", "%q listed twice", col)
			}
			cr.chanIdx = append(cr.chanIdx, i)
			cr.channels = append(cr.channels, header[i])
		}
	} else {
		// Every numeric column: one that parses as a number in at least
		// half of the first rows.
		for len(cr.peeked) < 16 {
			fields, err := c.Read()
			if err == io.EOF {
				break
			}
			var pe *csv.ParseError
			if err != nil && !errors.As(err, &pe) {
				return nil, fmt.Errorf("reading csv: %w", err)
			}
			var line int
			if pe != nil {
				line = pe.StartLine // FieldPos panics after an error
			} else {
				line, _ = c.FieldPos(0)
			}
			cr.peeked = append(cr.peeked, csvRow{fields: slices.Clone(fields), line: line, err: err})
		}
		for i, h := range header {
			if i == cr.timeIdx || isLabel[i] {
				continue
			}
			num, rows := 0, 0
			for _, row := range cr.peeked {
				if row.err != nil || i >= len(row.fields) {
					continue
				}
				rows++
				if _, err := strconv.ParseFloat(strings.TrimSpace(row.fields[i]), 64); err == nil {
					num++
				}
			}
			if rows > 0 && 2*num >= rows {
				cr.chanIdx = append(cr.chanIdx, i)
				cr.channels = append(cr.channels, h)
			}
		}
		if len(cr.channels) == 0 {
			return nil, optErr("Columns", "no numeric columns found in header %q", header)
		}
	}
	cr.need = cr.timeIdx + 1
	for _, i := range slices.Concat(cr.chanIdx, cr.labelIdx) {
		cr.need = max(cr.need, i+1)
	}
	return cr, nil
}

const utf8RuneError = '\uFFFD'

// OpenCSV starts reading a CSV file from r: it reads the header row and
// returns it (a copy, as the file has it) with the reader of the rows that
// follow. The reader reuses its records and allows any number of fields in
// a row. The delimiter is delim, or when delim is 0 the one the header line
// holds most of (see detectDelimiter). A file with no header row is an
// error.
func OpenCSV(r io.Reader, delim rune) (*csv.Reader, []string, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	if delim == 0 {
		head, _ := br.Peek(64 << 10)
		delim = detectDelimiter(head)
	}
	c := csv.NewReader(br)
	c.Comma = delim
	c.FieldsPerRecord = -1
	c.ReuseRecord = true
	header, err := c.Read()
	if err == io.EOF {
		return nil, nil, errors.New("empty file: no header row")
	}
	if err != nil {
		return nil, nil, fmt.Errorf("reading header: %w", err)
	}
	return c, slices.Clone(header), nil
}

// detectDelimiter picks ';', ',' or tab, whichever the header line has most
// of outside quotes (',' when it has none).
func detectDelimiter(head []byte) rune {
	if i := bytes.IndexByte(head, '\n'); i >= 0 {
		head = head[:i]
	}
	var n [3]int
	quoted := false
	for _, c := range head {
		switch c {
		case '"':
			quoted = !quoted
		case ';':
			if !quoted {
				n[0]++
			}
		case ',':
			if !quoted {
				n[1]++
			}
		case '\t':
			if !quoted {
				n[2]++
			}
		}
	}
	switch {
	case n[0] > n[1] && n[0] >= n[2]:
		return ';'
	case n[2] > n[1] && n[2] > n[0]:
		return '\t'
	}
	return ','
}

// looksLikeData reports whether every field of a would-be header is a
// number or a timestamp.
func looksLikeData(fields []string, tp timeParser) bool {
	for _, f := range fields {
		if f == "" {
			continue
		}
		if _, err := strconv.ParseFloat(f, 64); err == nil {
			continue
		}
		if _, err := tp.parseString(f); err == nil {
			continue
		}
		return false
	}
	return true
}

// next reads the next row's time, channel values (into vals) and labels
// (into labels). It returns io.EOF at the end of the file, a *rowError for
// a bad row (and can be called again), or an I/O error.
func (cr *csvReader) next(vals, labels []float64) (time.Time, int, error) {
	var fields []string
	var line int
	if len(cr.peeked) > 0 {
		row := cr.peeked[0]
		cr.peeked = cr.peeked[1:]
		if row.err != nil {
			return time.Time{}, row.line, &rowError{line: row.line, reason: DropInvalid, msg: row.err.Error()}
		}
		fields, line = row.fields, row.line
	} else {
		var err error
		fields, err = cr.r.Read()
		if err == io.EOF {
			return time.Time{}, 0, io.EOF
		}
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			return time.Time{}, pe.StartLine, &rowError{line: pe.StartLine, reason: DropInvalid, msg: pe.Err.Error()}
		}
		if err != nil {
			return time.Time{}, 0, fmt.Errorf("reading csv: %w", err)
		}
		line, _ = cr.r.FieldPos(0)
	}
	if len(fields) < cr.need {
		return time.Time{}, line, &rowError{line: line, reason: DropMissing, msg: fmt.Sprintf("%d fields, want at least %d", len(fields), cr.need)}
	}
	ts, err := cr.tp.parseString(strings.TrimSpace(fields[cr.timeIdx]))
	if err != nil {
		return time.Time{}, line, &rowError{line: line, reason: DropInvalid, msg: fmt.Sprintf("%s: %v", cr.header[cr.timeIdx], err)}
	}
	parse := func(i int, dst *float64) error {
		s := strings.TrimSpace(fields[i])
		if s == "" {
			return &rowError{line: line, reason: DropMissing, msg: cr.header[i] + ": empty"}
		}
		v, err := strconv.ParseFloat(s, 64)
		if err != nil && !math.IsInf(v, 0) {
			return &rowError{line: line, reason: DropInvalid, msg: fmt.Sprintf("%s: %.40q is not a number", cr.header[i], s)}
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return &rowError{line: line, reason: DropNonFinite, msg: fmt.Sprintf("%s: %s", cr.header[i], s)}
		}
		*dst = v
		return nil
	}
	for k, i := range cr.chanIdx {
		if err := parse(i, &vals[k]); err != nil {
			return time.Time{}, line, err
		}
	}
	for k, i := range cr.labelIdx {
		if k < len(labels) {
			if err := parse(i, &labels[k]); err != nil {
				return time.Time{}, line, err
			}
		}
	}
	return ts, line, nil
}
