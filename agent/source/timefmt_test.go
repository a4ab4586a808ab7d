package source

import (
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
}
