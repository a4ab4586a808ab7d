package source

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"
)

func TestTimeParser(t *testing.T) {
	ts := time.Date(2020, 3, 9, 10, 14, 33, 0, time.UTC)
	ms := time.Date(2024, 6, 10, 6, 13, 20, 123e6, time.UTC)
	berlin, _ := time.LoadLocation("Europe/Berlin")
	if berlin == nil {
		berlin = time.FixedZone("CET", 3600)
	}
	tests := []struct {
		format string
		loc    *time.Location
		in     string
		num    float64
		isNum  bool
		want   time.Time
		bad    bool
	}{
		{format: TimeAuto, in: "2020-03-09 10:14:33", want: ts},
		{format: TimeAuto, in: "2020-03-09T10:14:33Z", want: ts},
		{format: TimeAuto, in: "2020-03-09T12:14:33+02:00", want: ts},
		{format: TimeAuto, in: "2020-03-09 10:14:33.5", want: ts.Add(500 * time.Millisecond)},
		{format: TimeAuto, in: "2020-03-09T10:14:33", want: ts},
		{format: TimeAuto, in: "1583748873", want: ts},
		{format: TimeAuto, in: "1718000000123", want: ms},
		{format: TimeAuto, isNum: true, num: 1583748873, want: ts},
		{format: TimeAuto, isNum: true, num: 1583748873.25, want: ts.Add(250 * time.Millisecond)},
		{format: TimeAuto, isNum: true, num: 1718000000123, want: ms},
		{format: TimeAuto, isNum: true, num: 1718000000123000, want: ms},
		{format: TimeAuto, isNum: true, num: 1718000000000000000, want: time.Unix(1718000000, 0)},
		{format: TimeUnixMs, isNum: true, num: 1583748873000, want: ts},
		{format: TimeUnix, in: "1583748873", want: ts},
		{format: TimeUnixNs, isNum: true, num: 1583748873e9, want: ts},
		{format: TimeRFC3339, in: "2020-03-09T10:14:33Z", want: ts},
		{format: TimeRFC3339, in: "2020-03-09 10:14:33", bad: true},
		{format: SKABTimeLayout, in: "2020-03-09 10:14:33", want: ts},
		{format: SKABTimeLayout, loc: berlin, in: "2020-03-09 11:14:33", want: ts},
		{format: SKABTimeLayout, isNum: true, num: 1, bad: true},
		{format: TimeAuto, in: "yesterday", bad: true},
		{format: TimeAuto, in: "", bad: true},
		{format: TimeAuto, isNum: true, num: 1e300, bad: true},
	}
	for _, tt := range tests {
		p, err := newTimeParser(tt.format, tt.loc)
		if err != nil {
			t.Fatalf("%q: %v", tt.format, err)
		}
		var got time.Time
		if tt.isNum {
			got, err = p.parseNumber(tt.num)
		} else {
			got, err = p.parseString(tt.in)
		}
		if tt.bad {
			if err == nil {
				t.Errorf("%q %q/%v: got %v, want an error", tt.format, tt.in, tt.num, got)
			}
			continue
		}
		if err != nil || !got.Equal(tt.want) {
			t.Errorf("%q %q/%v: got %v, %v; want %v", tt.format, tt.in, tt.num, got, err, tt.want)
		}
	}
	if _, err := newTimeParser("nonsense", nil); err == nil {
		t.Error("newTimeParser accepted a layout without a date")
	}
	// Found by FuzzParseTime: day, zero-padded day side by side.
	for _, layout := range []string{"202-1-2 1:4:5", "2006-01-215:04:05"} {
		if _, err := newTimeParser(layout, nil); err == nil || !strings.Contains(err.Error(), "does not read back") {
			t.Errorf("newTimeParser(%q): %v, want a layout that does not read back refused", layout, err)
		}
	}
}

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
