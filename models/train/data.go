package train

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/vigil-edge/vigil/models"
)

// Data is a table of numeric samples: Rows[i][j] is column Columns[j] of
// sample i, in time order.
type Data struct {
	Columns []string
	Rows    [][]float64
}

// FromCSV reads the named columns of a CSV file with a header row. The
// delimiter (',', ';' or tab) is taken from the header line; CRLF line ends
// are fine. columns selects and orders the columns; nil or empty takes
// every column. A missing column, a value that is not a number, NaN or
// infinity, or a short row is an error naming the line and column.
func FromCSV(r io.Reader, columns []string) (*Data, error) {
	br := bufio.NewReader(r)
	head, err := br.Peek(4096)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
		return nil, fmt.Errorf("read csv: %w", err)
	}
	if len(bytes.TrimSpace(head)) == 0 {
		return nil, errors.New("read csv: empty input, want a header row and data")
	}
	cr := csv.NewReader(br)
	cr.Comma = sniffDelimiter(head)
	cr.FieldsPerRecord = -1 // checked below, with a better message
	cr.ReuseRecord = true
	header, err := cr.Read()
	if err != nil {
		return nil, fmt.Errorf("read csv header: %w", err)
	}
	header = append([]string(nil), header...)
	for i := range header {
		header[i] = strings.TrimSpace(strings.TrimPrefix(header[i], "\ufeff"))
	}
	index := map[string]int{}
	for i, h := range header {
		if _, dup := index[h]; !dup {
			index[h] = i
		}
	}
	if len(columns) == 0 {
		columns = header
	}
	idx := make([]int, len(columns))
	seen := map[string]bool{}
	var missing []string
	for j, c := range columns {
		if seen[c] {
			return nil, fmt.Errorf("read csv: column %q is asked for twice", c)
		}
		seen[c] = true
		i, ok := index[c]
		if !ok {
			missing = append(missing, strconv.Quote(c))
			continue
		}
		idx[j] = i
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("read csv: no column %s; the header has %s",
			strings.Join(missing, ", "), quoteAll(header))
	}
	d := &Data{Columns: append([]string(nil), columns...)}
	for {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read csv: %w", err)
		}
		line, _ := cr.FieldPos(0)
		if len(rec) == 1 && strings.TrimSpace(rec[0]) == "" {
			continue // a blank line
		}
		if len(rec) != len(header) {
			return nil, fmt.Errorf("read csv: line %d has %d fields, the header has %d", line, len(rec), len(header))
		}
		row := make([]float64, len(idx))
		for j, i := range idx {
			s := strings.TrimSpace(rec[i])
			if s == "" {
				return nil, fmt.Errorf("read csv: line %d column %q is empty", line, columns[j])
			}
			v, err := strconv.ParseFloat(s, 64)
			if err != nil {
				return nil, fmt.Errorf("read csv: line %d column %q: %q is not a number", line, columns[j], s)
			}
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, fmt.Errorf("read csv: line %d column %q is %s, want a finite number", line, columns[j], s)
			}
			row[j] = v
		}
		d.Rows = append(d.Rows, row)
	}
	if len(d.Rows) == 0 {
		return nil, errors.New("read csv: no data rows after the header")
	}
	return d, nil
}

// sniffDelimiter picks the delimiter that occurs most in the first line.
func sniffDelimiter(head []byte) rune {
	line, _, _ := bytes.Cut(head, []byte("\n"))
	best, n := ',', bytes.Count(line, []byte(","))
	for _, d := range []rune{';', '\t'} {
		if c := bytes.Count(line, []byte(string(d))); c > n {
			best, n = d, c
		}
	}
	return best
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}

// checkRows verifies that every row has width values, all finite.
func checkRows(rows [][]float64, width int) error {
	for i, r := range rows {
		if len(r) != width {
			return fmt.Errorf("row %d has %d values, want %d (one per channel)", i, len(r), width)
		}
		for j, v := range r {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return fmt.Errorf("row %d channel %d is %v, want a finite number", i, j, v)
			}
		}
	}
	return nil
}

// dataHash is the hex SHA-256 of the rows as little-endian float64s.
func dataHash(rows [][]float64) string {
	h := sha256.New()
	var b [8]byte
	for _, r := range rows {
		for _, v := range r {
			binary.LittleEndian.PutUint64(b[:], math.Float64bits(v))
			h.Write(b[:])
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// scaler standardises channels with the mean and std of the training rows.
type scaler struct {
	mean, std []float64
	// center marks the channels centred on their window mean (nil: none).
	center []bool
}

// fitScaler computes each channel's mean and (population) standard
// deviation, or, robust, its median and 1.4826 × its median absolute
// deviation (Options.Robust). A channel that is constant in the data gets std 1, so that
// it is centred but not blown up; warnings says which.
func fitScaler(rows [][]float64, channels []string, robust bool) (s scaler, warnings []string) {
	c := len(channels)
	s.mean, s.std = make([]float64, c), make([]float64, c)
	for _, r := range rows {
		for j, v := range r {
			s.mean[j] += v
		}
	}
	n := float64(len(rows))
	for j := range s.mean {
		s.mean[j] /= n
	}
	for _, r := range rows {
		for j, v := range r {
			d := v - s.mean[j]
			s.std[j] += d * d
		}
	}
	for j := range s.std {
		s.std[j] = math.Sqrt(s.std[j] / n)
		if robust {
			col := make([]float64, len(rows))
			for i, r := range rows {
				col[i] = r[j]
			}
			slices.Sort(col)
			med := Quantile(col, 0.5)
			for i := range col {
				col[i] = math.Abs(col[i] - med)
			}
			slices.Sort(col)
			// 1.4826·MAD estimates the std of normal noise; a channel
			// whose MAD is 0 (mostly one value) keeps its std
			if mad := 1.4826 * Quantile(col, 0.5); mad > 0 {
				s.mean[j], s.std[j] = med, mad
			}
		}
		// Below this, the variation is rounding noise around the mean.
		if s.std[j] <= 1e-9*max(1, math.Abs(s.mean[j])) {
			warnings = append(warnings, fmt.Sprintf("channel %q is constant (%g) in the training data: normalised with std 1, so any change from it counts in raw units", channels[j], s.mean[j]))
			s.std[j] = 1
		}
	}
	return s, warnings
}

// widen makes room for drift (Options.DriftHorizon): the std of each
// channel that moves slowly against its noise, its von Neumann ratio over
// rows below 1 (the ratio of white noise), becomes
// sqrt(std² + (slope·horizon)²), slope being the channel's least-squares
// trend per row over rows. A noisy channel (ratio 1 or more) keeps its std:
// the trend fitted to its noise over a short warm-up is mostly chance, and
// widening it would blind the model to the shifts in level that are the
// clearest sign of an anomaly in such a channel.
func (s scaler) widen(rows [][]float64, horizon int) {
	n := float64(len(rows))
	if n < 2 {
		return
	}
	tMean := (n - 1) / 2
	tVar := 0.0 // Σ (t - tMean)²
	for t := range rows {
		d := float64(t) - tMean
		tVar += d * d
	}
	for j, vn := range smoothness(rows, len(s.std)) {
		if vn >= 1 {
			continue
		}
		mean := 0.0
		for _, r := range rows {
			mean += r[j]
		}
		mean /= n
		cov := 0.0
		for t, r := range rows {
			cov += (float64(t) - tMean) * (r[j] - mean)
		}
		drift := cov / tVar * float64(horizon)
		s.std[j] = math.Sqrt(s.std[j]*s.std[j] + drift*drift)
	}
}

// windows cuts rows [from, to) into normalised windows of size w taken
// every stride rows, each flattened sample-major. Values are normalised as
// models.Model does it, (x-mean)×(1/std) rounded to float32, and centred
// channels centred by models.Centre, so that the trainer sees exactly the
// numbers the exported model will be given.
func (s scaler) windows(rows [][]float64, from, to, w, stride int) [][]float64 {
	var out [][]float64
	c := len(s.mean)
	inv := make([]float64, c)
	for j, sd := range s.std {
		inv[j] = 1 / sd
	}
	raw := make([]float64, w*c)
	in := make([]float32, w*c)
	for start := from; start+w <= to; start += stride {
		for t := range w {
			for j, v := range rows[start+t] {
				raw[t*c+j] = v
				in[t*c+j] = float32((v - s.mean[j]) * inv[j])
			}
		}
		if s.center != nil {
			models.Centre(raw, in, s.mean, inv, s.center, w)
		}
		win := make([]float64, w*c)
		for i, v := range in {
			win[i] = float64(v)
		}
		out = append(out, win)
	}
	return out
}

// smoothness is each channel's von Neumann ratio over rows: the mean
// squared difference between consecutive rows over twice the variance.
// White noise is near 1; a channel that moves slowly against its noise
// (a temperature) is near 0. A constant channel gets 1.
func smoothness(rows [][]float64, channels int) []float64 {
	r := make([]float64, channels)
	n := float64(len(rows))
	for j := range r {
		mean := 0.0
		for _, row := range rows {
			mean += row[j]
		}
		mean /= n
		v, d := 0.0, 0.0
		for t, row := range rows {
			v += (row[j] - mean) * (row[j] - mean)
			if t > 0 {
				d += (row[j] - rows[t-1][j]) * (row[j] - rows[t-1][j])
			}
		}
		r[j] = 1
		if v > 0 && len(rows) > 1 {
			r[j] = (d / (n - 1)) / (2 * v / n)
		}
	}
	return r
}
