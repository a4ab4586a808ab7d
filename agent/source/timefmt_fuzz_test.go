package source

import (
	"errors"
	"math"
	"testing"
	"time"
)

// FuzzParseTime parses strings and numbers in every time format and a few
// layouts: no input crashes the parser, every error wraps errBadTime, a
// unix time comes back as the same instant (to the rounding of its unit),
// and a time parsed by a layout formats back into a string the layout
// parses.
func FuzzParseTime(f *testing.F) {
	for _, s := range []struct {
		format string
		s      string
		v      float64
	}{
		{"", "2024-06-10T06:13:20Z", 1718000000},
		{"", "2024-06-10 06:13:20.123", 1718000000123},
		{"", "1718000000.5", 1.718e15},
		{"", "-1", -1},
		{"unix", "1e18", 9.2e18},
		{"unix_ms", "1718000000123", 1718000000123},
		{"unix_us", "+.5", 0.5},
		{"unix_ns", "9223372036854775807", 9.3e18},
		{"rfc3339", "2024-06-10T06:13:20.999999999+14:00", 0},
		{SKABTimeLayout, "2020-03-09 10:14:33", 0},
		{SKABTimeLayout, "2020-03-09 10:14:33.5", 0},
		{"02/01/2006 15:04 MST", "10/06/2024 06:13 CEST", 0},
		{"2006-01-02", "0000-01-01", 0},
	} {
		f.Add(s.format, s.s, s.v)
	}
	f.Fuzz(func(t *testing.T, format, s string, v float64) {
		p, err := newTimeParser(format, time.UTC)
		if err != nil {
			return
		}
		if tm, err := p.parseString(s); err != nil {
			if !errors.Is(err, errBadTime) {
				t.Fatalf("%q in %q: error %v does not wrap errBadTime", s, format, err)
			}
		} else if p.kind == timeKindLayout {
			back := tm.Format(p.layout)
			if _, err := time.ParseInLocation(p.layout, back, p.loc); err != nil {
				t.Fatalf("%q in %q: parsed as %v, which formats as %q, which does not parse: %v", s, format, tm, back, err)
			}
		}
		tm, err := p.parseNumber(v)
		if err != nil {
			if !errors.Is(err, errBadTime) {
				t.Fatalf("%v in %q: error %v does not wrap errBadTime", v, format, err)
			}
			return
		}
		if p.kind != timeKindUnit {
			return
		}
		ns := v * float64(p.unit)
		if math.Abs(ns) >= 9e18 {
			return // UnixNano does not hold it
		}
		if d := math.Abs(float64(tm.UnixNano()) - ns); d > 1000+math.Abs(ns)*1e-15 {
			t.Fatalf("%v in %q: %v, %v ns from %v ns", v, format, tm, d, ns)
		}
	})
}
