package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// writeSKABLike writes a SKAB-shaped file: 150 rows at 1 Hz of 8 periodic
// channels, rows 100..129 labelled anomalous and shifted on two channels.
func writeSKABLike(t *testing.T, path string, phase float64) {
	t.Helper()
	var b strings.Builder
	b.WriteString("datetime;Accelerometer1RMS;Accelerometer2RMS;Current;Pressure;Temperature;Thermocouple;Voltage;Volume Flow RateRMS;anomaly;changepoint\r\n")
	for i := range 150 {
		anomaly := i >= 100 && i < 130
		fmt.Fprintf(&b, "2020-03-09 10:%02d:%02d", i/60, i%60)
		for c := range 8 {
			v := float64(c) + math.Sin(phase+float64(i)/float64(4+c)) + 0.05*math.Cos(float64(i*i%17))
			if anomaly && (c == 3 || c == 7) {
				v += 5
			}
			fmt.Fprintf(&b, ";%.5f", v)
		}
		label := 0
		if anomaly {
			label = 1
		}
		fmt.Fprintf(&b, ";%d.0;0.0\r\n", label)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestEvalSKABCommand(t *testing.T) {
	dir := t.TempDir()
	writeSKABLike(t, filepath.Join(dir, "valve1", "0.csv"), 0)
	writeSKABLike(t, filepath.Join(dir, "valve1", "1.csv"), 1)
	writeSKABLike(t, filepath.Join(dir, "valve2", "0.csv"), 2)
	small := []string{"--train-rows", "80", "--window", "8", "--hidden", "16,4", "--epochs", "20", "--patience", "5", "--drift", "0"}

	var stdout, stderr bytes.Buffer
	jsonPath := filepath.Join(t.TempDir(), "report.json")
	args := append([]string{"skab", "--data", dir, "--files", "valve1/*.csv", "--json", jsonPath}, small...)
	if err := Eval(context.Background(), args, &stdout, &stderr); err != nil {
		t.Fatalf("%v\nstderr:\n%s", err, stderr.String())
	}
	lines := strings.Split(strings.TrimRight(stdout.String(), "\n"), "\n")
	last := lines[len(lines)-1]
	if !regexp.MustCompile(`^F1=\d\.\d{3} FAR=\d+\.\d{2} MAR=\d+\.\d{2} files=2 rows=140$`).MatchString(last) {
		t.Errorf("last line %q, want the summary of 2 files and 140 rows\n%s", last, stdout.String())
	}
	for _, want := range []string{"TP", "FP", "FN", "TN", "F1", "FAR%", "MAR%", "valve1/0.csv", "valve1/1.csv", "total",
		"detected", "delay_s", "false", "nab_std", "anomalies detected", "NAB (episode openings"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("stdout lacks %q:\n%s", want, stdout.String())
		}
	}
	raw, err := os.ReadFile(jsonPath)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Files []struct {
			Name   string `json:"name"`
			Points struct {
				TP, Rows int
			} `json:"points"`
			Alerts struct {
				Anomalies int `json:"anomalies"`
			} `json:"alerts"`
		} `json:"files"`
		Points struct {
			Rows int `json:"rows"`
		} `json:"points"`
		Alerts struct {
			Anomalies int       `json:"anomalies"`
			Episodes  int       `json:"episodes"`
			Detected  int       `json:"detected"`
			Delays    []float64 `json:"delays_s"`
		} `json:"alerts"`
		Summary string `json:"summary"`
	}
	if err := json.Unmarshal(raw, &rep); err != nil {
		t.Fatalf("--json: %v\n%s", err, raw)
	}
	if len(rep.Files) != 2 || rep.Files[0].Name != "valve1/0.csv" || rep.Points.Rows != 140 || rep.Summary != last ||
		rep.Alerts.Anomalies != 2 || rep.Files[1].Alerts.Anomalies != 1 || len(rep.Alerts.Delays) != rep.Alerts.Detected {
		t.Errorf("--json report does not match the run:\n%s", raw)
	}
	if strings.Contains(stdout.String(), "valve2") {
		t.Errorf("--files valve1/*.csv evaluated valve2:\n%s", stdout.String())
	}
	if n := strings.Count(stderr.String(), " done "); n != 2 {
		t.Errorf("%d progress lines on stderr, want 2:\n%s", n, stderr.String())
	}

	errs := []struct {
		name string
		args []string
		want string // in the error; "" for a usage error
	}{
		{"no subcommand", nil, ""},
		{"unknown subcommand", []string{"nab"}, ""},
		{"no data", []string{"skab"}, ""},
		{"missing dir", []string{"skab", "--data", filepath.Join(dir, "nope")}, "holds none of the SKAB folders"},
		{"no match", []string{"skab", "--data", dir, "--files", "other/*.csv"}, `no file under`},
		{"bad filters", []string{"skab", "--data", dir, "--filters", "a,b"}, "--filters"},
		{"bad mapping", []string{"skab", "--data", dir, "--mapping", "late"}, "Mapping"},
		{"bad cusum", []string{"skab", "--data", dir, "--cusum", "1"}, "--cusum"},
		{"cusum without h", []string{"skab", "--data", dir, "--cusum", "1,0"}, "--cusum"},
		{"cusum-only alone", []string{"skab", "--data", dir, "--cusum-only"}, "CUSUM.Only"},
	}
	for _, tt := range errs {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := Eval(context.Background(), tt.args, &out, &errOut)
			switch {
			case tt.want == "" && err != ErrUsage:
				t.Errorf("err = %v, want a usage error", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("err = %v, want it to say %q", err, tt.want)
			}
		})
	}
}
