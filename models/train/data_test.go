package train

import (
	"math"
	"reflect"
	"strings"
	"testing"
)

func TestFromCSV(t *testing.T) {
	tests := []struct {
		name    string
		csv     string
		columns []string
		want    *Data
		err     string
	}{
		{"comma, all columns", "a,b\n1,2\n3,4.5\n", nil,
			&Data{Columns: []string{"a", "b"}, Rows: [][]float64{{1, 2}, {3, 4.5}}}, ""},
		{"semicolon CRLF with a date column, SKAB style",
			"datetime;Accelerometer1RMS;Volume Flow RateRMS;anomaly\r\n2020-03-09 10:14:33;0.027;32.0;0\r\n2020-03-09 10:14:34;0.026;32.2;0\r\n",
			[]string{"Volume Flow RateRMS", "Accelerometer1RMS"},
			&Data{Columns: []string{"Volume Flow RateRMS", "Accelerometer1RMS"}, Rows: [][]float64{{32, 0.027}, {32.2, 0.026}}}, ""},
		{"tab, spaces, BOM, blank line", "\ufeffx\t y \n 1\t-2e3 \n\n4\t5\n", []string{"y"},
			&Data{Columns: []string{"y"}, Rows: [][]float64{{-2000}, {5}}}, ""},
		{"missing column", "a,b\n1,2\n", []string{"a", "c", "d"}, nil,
			`no column "c", "d"; the header has "a", "b"`},
		{"not a number", "a,b\n1,2\n3,high\n", nil, nil, `line 3 column "b": "high" is not a number`},
		{"NaN", "a,b\n1,NaN\n", nil, nil, `line 2 column "b" is NaN, want a finite number`},
		{"infinity", "a\n+Inf\n", nil, nil, `line 2 column "a" is +Inf`},
		{"empty value", "a,b\n1,\n", []string{"b"}, nil, `line 2 column "b" is empty`},
		{"short row", "a,b,c\n1,2\n", nil, nil, "line 2 has 2 fields, the header has 3"},
		{"no rows", "a,b\n", nil, nil, "no data rows"},
		{"empty", "  \n", nil, nil, "empty input"},
		{"column twice", "a,b\n1,2\n", []string{"a", "a"}, nil, `column "a" is asked for twice`},
		{"bad quoting", "a,b\n\"1,2\n", nil, nil, "read csv"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FromCSV(strings.NewReader(tt.csv), tt.columns)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("FromCSV() error = %v, want one containing %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("FromCSV() = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestFitScaler(t *testing.T) {
	rows := [][]float64{{1, 5, 100}, {3, 5, 100}, {5, 5, 100}}
	s, warnings := fitScaler(rows, []string{"a", "flat", "big"}, false)
	if s.mean[0] != 3 || math.Abs(s.std[0]-math.Sqrt(8.0/3)) > 1e-12 {
		t.Errorf("channel a: mean %v std %v", s.mean[0], s.std[0])
	}
	if s.std[1] != 1 || s.std[2] != 1 || len(warnings) != 2 || !strings.Contains(warnings[0], `channel "flat" is constant (5)`) {
		t.Errorf("constant channels: std %v, warnings %q", s.std, warnings)
	}
	w := s.windows(rows, 0, 3, 2, 1)
	if len(w) != 2 || w[0][0] != float64(float32(-2/math.Sqrt(8.0/3))) || w[1][3] != -w[0][0] || w[1][4] != 0 {
		t.Errorf("windows %v", w)
	}
	if got := s.windows(rows, 1, 3, 3, 1); len(got) != 0 {
		t.Errorf("a window longer than the rows gave %d windows", len(got))
	}
}

func TestCheckRows(t *testing.T) {
	if err := checkRows([][]float64{{1, 2}, {3}}, 2); err == nil || !strings.Contains(err.Error(), "row 1 has 1 values, want 2") {
		t.Errorf("short row: %v", err)
	}
	if err := checkRows([][]float64{{1, 2}, {3, math.NaN()}}, 2); err == nil || !strings.Contains(err.Error(), "row 1 channel 1 is NaN") {
		t.Errorf("NaN: %v", err)
	}
}

func TestDataHash(t *testing.T) {
	a := dataHash([][]float64{{1, 2}, {3, 4}})
	if a != dataHash([][]float64{{1, 2, 3}, {4}}) || a == dataHash([][]float64{{1, 2}, {3, 5}}) || len(a) != 64 {
		t.Error("dataHash is not a hash of the values in order")
	}
}

// TestFitScalerRobust: median and 1.4826 × MAD, untouched by the outlier;
// a channel whose MAD is 0 keeps its mean and std.
func TestFitScalerRobust(t *testing.T) {
	rows := [][]float64{{1, 5}, {2, 5}, {3, 5}, {4, 5}, {100, 6}}
	s, _ := fitScaler(rows, []string{"a", "mostly5"}, true)
	if s.mean[0] != 3 || math.Abs(s.std[0]-1.4826) > 1e-12 {
		t.Errorf("robust a: centre %v scale %v, want 3 and 1.4826", s.mean[0], s.std[0])
	}
	if math.Abs(s.mean[1]-5.2) > 1e-12 || math.Abs(s.std[1]-0.4) > 1e-12 {
		t.Errorf("MAD 0 keeps mean and std: %v %v, want 5.2 and 0.4", s.mean[1], s.std[1])
	}
}
