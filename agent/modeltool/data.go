package modeltool

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vigil-edge/vigil/agent/source"
)

// Data is a recorded file of samples: one row of channel values per
// sample, in file order.
type Data struct {
	// Channels names the columns of Rows.
	Channels []string
	// Times holds each row's time; nil when the file has no time column
	// (rows are then one step apart).
	Times []time.Time
	Rows  [][]float64
	// Lines are the rows' line numbers in the file (the header is line 1
	// of a CSV file).
	Lines []int
	// Dropped counts rows left out (a missing field, a value that is not
	// a finite number, a bad time), and FirstDrop says why the first was.
	Dropped   int
	FirstDrop string
}

// ReadOptions say how to read a data file.
type ReadOptions struct {
	// Columns are the file's columns (CSV) or fields (JSONL) that hold
	// the channels, in the model's channel order.
	Columns []string
	// TimeColumn names the time column or field; empty looks for datetime,
	// timestamp, time, ts or date, and a file with none has rows one
	// step apart.
	TimeColumn string
}

// ReadData reads a CSV file (any other extension) or a JSONL file
// (.jsonl, .ndjson) of samples. CSV files are read by the agent's reader
// (agent/source) when they have a time column; JSONL lines are decoded as
// the agent decodes MQTT payloads.
func ReadData(path string, opts ReadOptions) (*Data, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(opts.Columns) == 0 {
		return nil, errors.New("no columns to read")
	}
	switch strings.ToLower(filepath.Ext(path)) {
	case ".jsonl", ".ndjson":
		return readJSONL(b, opts)
	}
	tab, err := source.ReadCSV(bytes.NewReader(b), source.CSVOptions{Columns: opts.Columns, TimeColumn: opts.TimeColumn})
	var oe *source.OptionError
	if errors.As(err, &oe) && oe.Field == "TimeColumn" && opts.TimeColumn == "" {
		return ReadPlainCSV(bytes.NewReader(b), opts.Columns)
	}
	if err != nil {
		return nil, err
	}
	d := &Data{Channels: tab.Channels, Times: tab.Times, Rows: tab.Values, Lines: tab.Lines, Dropped: len(tab.Bad)}
	if len(tab.Bad) > 0 {
		d.FirstDrop = fmt.Sprintf("line %d: %s", tab.Bad[0].Line, tab.Bad[0].Msg)
	}
	return d, nil
}

// ReadPlainCSV reads a CSV file without a time column: a header, then one
// row per sample, the samples one step apart. The delimiter (',', ';' or
// tab) is the one the header holds most of outside quotes, as
// source.OpenCSV picks it. A row with a missing field or
// a value that is not a finite number is dropped and counted; a column of
// columns missing from the header is an error naming it.
func ReadPlainCSV(r io.Reader, columns []string) (*Data, error) {
	c, header, err := source.OpenCSV(r, 0)
	if err != nil {
		return nil, err
	}
	idx := make([]int, len(columns))
	var missing []string
	for k, col := range columns {
		idx[k] = -1
		for i, h := range header {
			if strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")) == col {
				idx[k] = i
				break
			}
		}
		if idx[k] < 0 {
			missing = append(missing, strconv.Quote(col))
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("no column %s in the header %q", strings.Join(missing, ", "), header)
	}
	d := &Data{Channels: append([]string(nil), columns...)}
	line := 1
	for {
		rec, err := c.Read()
		if err == io.EOF {
			return d, nil
		}
		line++
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				line = pe.Line
				d.drop(fmt.Sprintf("line %d: %v", line, pe.Err))
				continue
			}
			return nil, err
		}
		row := make([]float64, len(columns))
		ok := true
		for k, i := range idx {
			if i >= len(rec) {
				d.drop(fmt.Sprintf("line %d: no field for column %q", line, columns[k]))
				ok = false
				break
			}
			v, err := strconv.ParseFloat(strings.TrimSpace(rec[i]), 64)
			if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
				d.drop(fmt.Sprintf("line %d: column %q is %q, not a finite number", line, columns[k], rec[i]))
				ok = false
				break
			}
			row[k] = v
		}
		if ok {
			d.Rows = append(d.Rows, row)
			d.Lines = append(d.Lines, line)
		}
	}
}

func (d *Data) drop(why string) {
	if d.Dropped == 0 {
		d.FirstDrop = why
	}
	d.Dropped++
}

var timeFields = []string{"datetime", "timestamp", "time", "ts", "date"}

func readJSONL(b []byte, opts ReadOptions) (*Data, error) {
	tf := opts.TimeColumn
	if tf == "" {
		// The first object's time field, if it has one.
		first, _, _ := bytes.Cut(bytes.TrimLeft(b, " \t\r\n"), []byte("\n"))
		var obj map[string]json.RawMessage
		if json.Unmarshal(first, &obj) == nil {
			for _, f := range timeFields {
				if _, ok := obj[f]; ok {
					tf = f
					break
				}
			}
		}
	}
	dec, err := source.NewPayloadDecoder(source.PayloadOptions{Channels: opts.Columns, TimeField: tf})
	if err != nil {
		return nil, err
	}
	d := &Data{Channels: append([]string(nil), opts.Columns...)}
	if tf != "" {
		d.Times = []time.Time{}
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	line := 0
	missing := map[string]int{}
	for sc.Scan() {
		line++
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 {
			continue
		}
		vals := make([]float64, len(opts.Columns))
		t, _, err := dec.Decode(text, vals)
		if err == nil && tf != "" && t.IsZero() {
			err = fmt.Errorf("no time field %q", tf)
		}
		if err != nil {
			var pe *source.PayloadError
			if errors.As(err, &pe) && pe.Reason == source.DropMissing {
				missing[pe.Field]++
			}
			d.drop(fmt.Sprintf("line %d: %v", line, err))
			continue
		}
		d.Rows = append(d.Rows, vals)
		d.Lines = append(d.Lines, line)
		if tf != "" {
			d.Times = append(d.Times, t)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(d.Rows) == 0 && len(missing) > 0 {
		var names []string
		for _, c := range opts.Columns {
			if missing[c] > 0 {
				names = append(names, strconv.Quote(c))
			}
		}
		return nil, fmt.Errorf("no line has field %s", strings.Join(names, ", "))
	}
	return d, nil
}
