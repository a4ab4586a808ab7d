package source

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestReadCSV(t *testing.T) {
	t0 := time.Date(2020, 3, 9, 10, 14, 33, 0, time.UTC)
	tests := []struct {
		name     string
		opts     CSVOptions
		in       string
		channels []string
		rows     int
		values   [][]float64
		labels   map[string][]float64
		bad      []BadRow
		err      string // substring of the error
	}{{
		name:     "skab",
		in:       "datetime;A;B;anomaly;changepoint\r\n2020-03-09 10:14:33;1.5;2;0.0;0.0\r\n2020-03-09 10:14:34;1.25;3;1.0;1.0\r\n",
		channels: []string{"A", "B"},
		values:   [][]float64{{1.5, 2}, {1.25, 3}},
		labels:   map[string][]float64{"anomaly": {0, 1}, "changepoint": {0, 1}},
	}, {
		name:     "comma, BOM, rfc3339, non-numeric column skipped",
		in:       "\ufefftimestamp,x,device,y\n2020-03-09T10:14:33Z,1,pump-1,2\n2020-03-09T10:14:34Z,3,pump-1,4\n",
		channels: []string{"x", "y"},
		values:   [][]float64{{1, 2}, {3, 4}},
	}, {
		name:     "tab, unix ms, selected columns reordered",
		opts:     CSVOptions{Columns: []string{"y", "x"}, TimeColumn: "ts", TimeFormat: TimeUnixMs},
		in:       "ts\tx\ty\n1583748873000\t1\t2\n",
		channels: []string{"y", "x"},
		values:   [][]float64{{2, 1}},
	}, {
		name:     "quoted header with the delimiter inside",
		in:       "time;\"a;b\";c\n2020-03-09 10:14:33;1;2\n",
		channels: []string{"a;b", "c"},
		values:   [][]float64{{1, 2}},
	}, {
		name:     "bad rows dropped with their lines",
		in:       "datetime;A;B\n2020-03-09 10:14:33;1;2\n2020-03-09 10:14:34;x;2\n2020-03-09 10:14:35;NaN;2\n2020-03-09 10:14:36;1\nnot a time;1;2\n2020-03-09 10:14:37;;2\n2020-03-09 10:14:38;+Inf;2\n2020-03-09 10:14:39;1e999;2\n2020-03-09 10:14:40;3;4\n",
		channels: []string{"A", "B"},
		values:   [][]float64{{1, 2}, {3, 4}},
		bad: []BadRow{
			{Line: 3, Reason: DropInvalid}, {Line: 4, Reason: DropNonFinite}, {Line: 5, Reason: DropMissing},
			{Line: 6, Reason: DropInvalid}, {Line: 7, Reason: DropMissing}, {Line: 8, Reason: DropNonFinite},
			{Line: 9, Reason: DropNonFinite},
		},
	}, {
		name: "bad quote",
		in:   "datetime,A\n2020-03-09 10:14:33,1\n2020-03-09 10:14:34,\"1\n",
		err:  "",
		// the unterminated quote swallows the rest of the file: one bad row
		channels: []string{"A"},
		values:   [][]float64{{1}},
		bad:      []BadRow{{Line: 3, Reason: DropInvalid}},
	}, {
		name: "no header",
		in:   "2020-03-09 10:14:33;1;2\n",
		err:  "no header row",
	}, {
		name: "empty",
		in:   "",
		err:  "empty file",
	}, {
		name: "no time column",
		in:   "a;b\n1;2\n",
		err:  "TimeColumn: no timestamp column",
	}, {
		name: "unknown column",
		opts: CSVOptions{Columns: []string{"A", "Z"}},
		in:   "datetime;A\n2020-03-09 10:14:33;1\n",
		err:  `Columns: no column "Z"`,
	}, {
		name: "unknown time column",
		opts: CSVOptions{TimeColumn: "when"},
		in:   "datetime;A\n2020-03-09 10:14:33;1\n",
		err:  `TimeColumn: no column "when"`,
	}, {
		name: "no numeric column",
		in:   "datetime;A\n2020-03-09 10:14:33;x\n",
		err:  "no numeric columns",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tab, err := ReadCSV(strings.NewReader(tt.in), tt.opts)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(tab.Channels, tt.channels) {
				t.Errorf("channels %q, want %q", tab.Channels, tt.channels)
			}
			if !slices.EqualFunc(tab.Values, tt.values, slices.Equal) {
				t.Errorf("values %v, want %v", tab.Values, tt.values)
			}
			if len(tab.Times) != len(tt.values) || len(tab.Lines) != len(tt.values) {
				t.Errorf("%d times, %d lines for %d rows", len(tab.Times), len(tab.Lines), len(tt.values))
			} else if len(tab.Times) > 0 && !tab.Times[0].Equal(t0) {
				t.Errorf("first time %v, want %v", tab.Times[0], t0)
			}
			for k, want := range tt.labels {
				if !slices.Equal(tab.Labels[k], want) {
					t.Errorf("label %s = %v, want %v", k, tab.Labels[k], want)
				}
			}
			if len(tab.Bad) != len(tt.bad) {
				t.Fatalf("bad rows %+v, want %+v", tab.Bad, tt.bad)
			}
			for i, b := range tt.bad {
				if tab.Bad[i].Line != b.Line || tab.Bad[i].Reason != b.Reason {
					t.Errorf("bad row %d = %+v, want line %d %s", i, tab.Bad[i], b.Line, b.Reason)
				}
			}
		})
	}
}

func TestReadCSVOptionError(t *testing.T) {
	_, err := ReadCSV(strings.NewReader("datetime;A\n"), CSVOptions{Columns: []string{"B"}})
	var oe *OptionError
	if !errors.As(err, &oe) || oe.Field != "Columns" {
		t.Fatalf("error %v, want an OptionError for Columns", err)
	}
}

// skabDir is the shared SKAB data set, next to the repository.
const skabDir = "../../../shared/datasets/skab"

func TestReadRealSKAB(t *testing.T) {
	path := filepath.Join(skabDir, "valve1", "0.csv")
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		t.Skipf("SKAB data not present at %s", path)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tab, err := ReadCSV(f, CSVOptions{TimeFormat: SKABTimeLayout})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tab.Channels, PumpChannels()) {
		t.Fatalf("channels %q, want the pump's %q", tab.Channels, PumpChannels())
	}
	if len(tab.Values) != 1147 || len(tab.Bad) != 0 {
		t.Fatalf("%d rows, %d bad; want 1147, 0", len(tab.Values), len(tab.Bad))
	}
	anomalies := 0
	for _, v := range tab.Labels["anomaly"] {
		anomalies += int(v)
	}
	if anomalies != 401 {
		t.Errorf("%d anomalous rows, want 401", anomalies)
	}
	if want := time.Date(2020, 3, 9, 10, 14, 33, 0, time.UTC); !tab.Times[0].Equal(want) {
		t.Errorf("first time %v, want %v", tab.Times[0], want)
	}
	if tab.Lines[0] != 2 {
		t.Errorf("first row on line %d, want 2", tab.Lines[0])
	}
}

// FuzzReadCSV checks that no file crashes the CSV reader and that every
// row it keeps is finite.
func FuzzReadCSV(f *testing.F) {
	for _, s := range []string{
		"datetime;A;B;anomaly\r\n2020-03-09 10:14:33;1.5;2;0\r\n2020-03-09 10:14:34;x;;1\r\n",
		"timestamp,a\n1583748873,1\n\"1583748874\",\"2\"\n",
		"time\ta\n2020-03-09T10:14:33Z\tNaN\n", "", "\n\n", "a;b\n1;2\n", "\"a\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		tab, err := ReadCSV(strings.NewReader(string(data)), CSVOptions{})
		if err != nil {
			return
		}
		for i, row := range tab.Values {
			if len(row) != len(tab.Channels) {
				t.Fatalf("row %d has %d values for %d channels", i, len(row), len(tab.Channels))
			}
			for _, v := range row {
				if math.IsNaN(v) || math.IsInf(v, 0) {
					t.Fatalf("row %d kept a non-finite value", i)
				}
			}
		}
		if len(tab.Times) != len(tab.Values) || len(tab.Lines) != len(tab.Values) {
			t.Fatal("columns of different lengths")
		}
	})
}
