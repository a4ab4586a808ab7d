package source

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Time formats understood by the CSV, JSONL and MQTT decoders (the
// TimeFormat options). Any other value is a Go layout such as SKAB's
// "2006-01-02 15:04:05".
const (
	// TimeAuto accepts RFC 3339, "2006-01-02 15:04:05" (with optional
	// fractional seconds, or a "T" separator), and unix time as a number or
	// a numeric string, its unit guessed from its magnitude: seconds below
	// 1e11, milliseconds below 1e14, microseconds below 1e17, else
	// nanoseconds.
	TimeAuto    = ""
	TimeRFC3339 = "rfc3339"
	TimeUnix    = "unix"    // seconds, fractions allowed
	TimeUnixMs  = "unix_ms" // milliseconds
	TimeUnixUs  = "unix_us" // microseconds
	TimeUnixNs  = "unix_ns" // nanoseconds
)

// SKABTimeLayout is the layout of SKAB's datetime column.
const SKABTimeLayout = "2006-01-02 15:04:05"

type timeKind uint8

const (
	timeKindAuto timeKind = iota
	timeKindLayout
	timeKindUnit // a number in unit nanoseconds
)

// timeParser parses timestamps in one configured format.
type timeParser struct {
	kind   timeKind
	layout string
	unit   int64 // nanoseconds per unit, for timeKindUnit
	loc    *time.Location
}

func newTimeParser(format string, loc *time.Location) (timeParser, error) {
	if loc == nil {
		loc = time.UTC
	}
	p := timeParser{loc: loc}
	switch strings.ToLower(format) {
	case TimeAuto:
		p.kind = timeKindAuto
	case TimeRFC3339:
		p.kind, p.layout = timeKindLayout, time.RFC3339Nano
	case TimeUnix, "unix_s":
		p.kind, p.unit = timeKindUnit, 1e9
	case TimeUnixMs:
		p.kind, p.unit = timeKindUnit, 1e6
	case TimeUnixUs:
		p.kind, p.unit = timeKindUnit, 1e3
	case TimeUnixNs:
		p.kind, p.unit = timeKindUnit, 1
	default:
		if err := CheckTimeLayout(format); err != nil {
			return p, fmt.Errorf("unknown time format %q (want %q, %q, %q, %q, %q or a Go layout): %w",
				format, TimeRFC3339, TimeUnix, TimeUnixMs, TimeUnixUs, TimeUnixNs, err)
		}
		p.kind, p.layout = timeKindLayout, format
	}
	return p, nil
}

// layoutProbes are the times a layout must read back: one with
// single-digit fields, one with two-digit fields and nanoseconds.
var layoutProbes = []time.Time{
	time.Date(2001, 2, 3, 4, 5, 6, 7e6, time.UTC),
	time.Date(2017, 11, 28, 21, 37, 49, 123456789, time.UTC),
}

// CheckTimeLayout reports why f is not a Go time layout the decoders can
// read timestamps with: it needs a digit (a timestamp has one), layout
// elements (two different times format differently), and it must parse
// what it formats. A layout with two numbers side by side, the first of
// varying width ("2" then "02", "2" then "15"), reads its own output
// wrongly, and would read the source's timestamps wrongly too. The
// reference layout "2006-01-02 15:04:05" is one.
func CheckTimeLayout(f string) error {
	if !strings.ContainsAny(f, "0123456789") {
		return errors.New("it has no digit")
	}
	if layoutProbes[0].Format(f) == layoutProbes[1].Format(f) {
		return errors.New("it has no layout element: two different times format the same")
	}
	for _, t := range layoutProbes {
		s := t.Format(f)
		back, err := time.ParseInLocation(f, s, time.UTC)
		if err != nil || back.Format(f) != s {
			return fmt.Errorf("it does not read back what it writes (%q): are two numbers side by side?", s)
		}
	}
	return nil
}

var errBadTime = errors.New("bad timestamp")

// parseNumber turns a unix timestamp into a time.
func (p timeParser) parseNumber(v float64) (time.Time, error) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return time.Time{}, fmt.Errorf("%w: not finite", errBadTime)
	}
	unit := p.unit
	if p.kind == timeKindLayout {
		return time.Time{}, fmt.Errorf("%w: a number, want a string in layout %q", errBadTime, p.layout)
	}
	if p.kind == timeKindAuto {
		a := math.Abs(v)
		switch {
		case a < 1e11:
			unit = 1e9
		case a < 1e14:
			unit = 1e6
		case a < 1e17:
			unit = 1e3
		default:
			unit = 1
		}
	}
	return unixTime(v, unit)
}

// unixTime converts v units of unit nanoseconds since the epoch.
func unixTime(v float64, unit int64) (time.Time, error) {
	whole := math.Floor(v)
	if math.Abs(whole) > 9e18 {
		return time.Time{}, fmt.Errorf("%w: %g out of range", errBadTime, v)
	}
	frac := v - whole
	w := int64(whole)
	perSec := int64(1e9) / unit
	sec, rem := w/perSec, w%perSec
	var fracNs int64
	if unit == 1e9 {
		// A float64 holds today's unix seconds to about 0.2 µs: round the
		// fraction to whole microseconds (1718000000.123 → .123000).
		fracNs = int64(math.Round(frac*1e6)) * 1e3
	} else {
		fracNs = int64(math.Round(frac * float64(unit)))
	}
	nsec := rem*unit + fracNs
	return time.Unix(sec, nsec).UTC(), nil
}

// parseString parses a timestamp written as a string.
func (p timeParser) parseString(s string) (time.Time, error) {
	switch p.kind {
	case timeKindLayout:
		if strings.Contains(p.layout, "MST") {
			// time.Parse keeps an unknown zone's name, a substring of s;
			// s may be a view of a reused buffer.
			s = strings.Clone(s)
		}
		t, err := time.ParseInLocation(p.layout, s, p.loc)
		if err != nil {
			return time.Time{}, fmt.Errorf("%w: %q is not in layout %q", errBadTime, s, p.layout)
		}
		return t, nil
	case timeKindUnit:
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("%w: %q is not a number", errBadTime, s)
		}
		return p.parseNumber(v)
	}
	// Auto.
	if len(s) == 0 {
		return time.Time{}, fmt.Errorf("%w: empty", errBadTime)
	}
	if c := s[0]; c == '-' || c == '+' || c == '.' || (c >= '0' && c <= '9' && !looksLikeDate(s)) {
		if v, err := strconv.ParseFloat(s, 64); err == nil {
			return p.parseNumber(v)
		}
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if len(s) >= 19 && (s[10] == ' ' || s[10] == 'T') {
		layout := "2006-01-02 15:04:05.999999999"
		if s[10] == 'T' {
			layout = "2006-01-02T15:04:05.999999999"
		}
		if t, err := time.ParseInLocation(layout, s, p.loc); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%w: %q is neither RFC 3339, %q nor unix time", errBadTime, s, SKABTimeLayout)
}

// looksLikeDate reports whether s starts like "2006-01-02".
func looksLikeDate(s string) bool {
	return len(s) >= 10 && s[4] == '-' && s[7] == '-'
}
