package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode"

	"gopkg.in/yaml.v3"

	"github.com/vigil-edge/vigil/agent/forward/dify"
	"github.com/vigil-edge/vigil/agent/secret"
)

// Secret is a string that never prints (see agent/secret).
type Secret = secret.Secret

// ByteSize is a number of bytes. In the file and in the environment it is a
// plain non-negative integer (bytes) or a number with a unit: B, KB, MB, GB,
// TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024), case-insensitive,
// e.g. 256MiB, 1GB, 1.5GiB, 4096. The result must be a whole number of bytes.
type ByteSize int64

// Int64 returns the size in bytes.
func (b ByteSize) Int64() int64 { return int64(b) }

var byteUnits = []struct {
	name string
	mult float64
}{
	{"kib", 1 << 10}, {"mib", 1 << 20}, {"gib", 1 << 30}, {"tib", 1 << 40},
	{"kb", 1e3}, {"mb", 1e6}, {"gb", 1e9}, {"tb", 1e12},
	{"b", 1},
}

// ParseByteSize parses a size such as "256MiB", "1GB" or "4096".
func ParseByteSize(s string) (ByteSize, error) {
	in := strings.TrimSpace(s)
	if in == "" {
		return 0, errors.New("empty size")
	}
	i := strings.IndexFunc(in, func(r rune) bool { return !(r >= '0' && r <= '9' || r == '.') })
	num, unit := in, ""
	if i >= 0 {
		num, unit = in[:i], strings.TrimSpace(in[i:])
	}
	if num == "" {
		if strings.HasPrefix(in, "-") {
			return 0, fmt.Errorf("size %q is negative", s)
		}
		return 0, fmt.Errorf("invalid size %q: want a number of bytes or a number with a unit such as 256MiB or 1GB", s)
	}
	mult := 1.0
	if unit != "" {
		found := false
		for _, u := range byteUnits {
			if strings.EqualFold(unit, u.name) {
				mult, found = u.mult, true
				break
			}
		}
		if !found {
			return 0, fmt.Errorf("invalid size %q: unknown unit %q (use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB)", s, unit)
		}
	}
	if !strings.Contains(num, ".") {
		n, err := strconv.ParseUint(num, 10, 63)
		if err != nil {
			return 0, fmt.Errorf("invalid size %q: too large", s)
		}
		if unit == "" || mult == 1 {
			return ByteSize(n), nil
		}
		if float64(n) > float64(math.MaxInt64)/mult {
			return 0, fmt.Errorf("invalid size %q: too large", s)
		}
		return ByteSize(int64(n) * int64(mult)), nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, fmt.Errorf("invalid size %q: bad number %q", s, num)
	}
	v := f * mult
	if v >= math.MaxInt64 {
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	if v != math.Trunc(v) {
		return 0, fmt.Errorf("invalid size %q: not a whole number of bytes", s)
	}
	return ByteSize(v), nil
}

// String formats the size with the largest binary unit that divides it
// exactly (256MiB), else as plain bytes.
func (b ByteSize) String() string {
	for _, u := range []struct {
		name string
		mult int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if b != 0 && int64(b)%u.mult == 0 {
			return strconv.FormatInt(int64(b)/u.mult, 10) + u.name
		}
	}
	return strconv.FormatInt(int64(b), 10)
}

// MarshalText writes the size as String does.
func (b ByteSize) MarshalText() ([]byte, error) { return []byte(b.String()), nil }

// UnmarshalText parses a size as ParseByteSize does.
func (b *ByteSize) UnmarshalText(text []byte) error {
	return parseInto(b, string(text), ParseByteSize)
}

// UnmarshalYAML accepts an integer or a string with a unit.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	return parseScalar(b, n, "a size such as 256MiB", ParseByteSize)
}

// Switch is a three-way setting: "auto", "true" or "false". The forwarders
// use it for enabled: auto switches them on when their API key is set.
type Switch string

// Switch values.
const (
	Auto Switch = "auto"
	On   Switch = "true"
	Off  Switch = "false"
)

// ParseSwitch parses "auto" or a boolean as strconv.ParseBool does.
func ParseSwitch(s string) (Switch, error) {
	if strings.EqualFold(strings.TrimSpace(s), "auto") {
		return Auto, nil
	}
	v, err := strconv.ParseBool(strings.TrimSpace(s))
	if err != nil {
		return "", fmt.Errorf("invalid value %q: want auto, true or false", s)
	}
	if v {
		return On, nil
	}
	return Off, nil
}

// Resolve reports whether the switch is on, given what auto means here.
func (s Switch) Resolve(auto bool) bool {
	switch s {
	case On:
		return true
	case Off:
		return false
	default:
		return auto
	}
}

// UnmarshalYAML accepts true, false or auto.
func (s *Switch) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode && (n.Tag == "!!bool" || n.ShortTag() == "!!bool") {
		var b bool
		if err := n.Decode(&b); err == nil {
			*s = Off
			if b {
				*s = On
			}
			return nil
		}
	}
	return parseScalar(s, n, "auto, true or false", ParseSwitch)
}

// Rate is a count per period, written "6/min", "10/s", "100/h" or "3/30s";
// "0" or "" means unlimited.
type Rate struct {
	// Count events are allowed per Per. Count 0 means unlimited.
	Count int
	// Per is the period.
	Per time.Duration
}

// Unlimited reports whether the rate sets no limit.
func (r Rate) Unlimited() bool { return dify.Rate(r).Unlimited() }

// Interval is the mean time between events at this rate (0 when unlimited).
func (r Rate) Interval() time.Duration { return dify.Rate(r).Interval() }

var rateUnits = map[string]time.Duration{
	"s": time.Second, "sec": time.Second, "second": time.Second,
	"m": time.Minute, "min": time.Minute, "minute": time.Minute,
	"h": time.Hour, "hour": time.Hour,
}

// ParseRate parses "N/unit" (unit s, sec, second, m, min, minute, h, hour or
// a Go duration such as 30s), or "0" for unlimited.
func ParseRate(s string) (Rate, error) {
	in := strings.TrimSpace(s)
	if in == "" || in == "0" {
		return Rate{}, nil
	}
	num, unit, ok := strings.Cut(in, "/")
	if !ok {
		return Rate{}, fmt.Errorf("invalid rate %q: want N/unit such as 6/min, or 0 for unlimited", s)
	}
	n, err := strconv.Atoi(strings.TrimSpace(num))
	if err != nil || n < 0 {
		return Rate{}, fmt.Errorf("invalid rate %q: %q is not a non-negative integer", s, strings.TrimSpace(num))
	}
	unit = strings.ToLower(strings.TrimSpace(unit))
	per, ok := rateUnits[unit]
	if !ok {
		d, err := time.ParseDuration(unit)
		if err != nil || d <= 0 {
			return Rate{}, fmt.Errorf("invalid rate %q: unknown period %q (use s, min, h or a duration such as 30s)", s, unit)
		}
		per = d
	}
	if n == 0 {
		return Rate{}, nil
	}
	return Rate{Count: n, Per: per}, nil
}

// String formats the rate as ParseRate reads it.
func (r Rate) String() string { return dify.Rate(r).String() }

// MarshalText writes the rate as String does.
func (r Rate) MarshalText() ([]byte, error) { return []byte(r.String()), nil }

// UnmarshalText parses a rate as ParseRate does.
func (r *Rate) UnmarshalText(text []byte) error {
	return parseInto(r, string(text), ParseRate)
}

// UnmarshalYAML accepts "N/unit" or 0.
func (r *Rate) UnmarshalYAML(n *yaml.Node) error {
	return parseScalar(r, n, "a rate such as 6/min", ParseRate)
}

// formatDuration prints a duration without the trailing zero units that
// time.Duration.String adds: 1m, not 1m0s.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// parseDuration is time.ParseDuration with an error that says what is
// wanted.
func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		if _, nerr := strconv.ParseFloat(strings.TrimSpace(s), 64); nerr == nil && s != "0" {
			return 0, fmt.Errorf("invalid duration %q: missing unit (want e.g. 10s, 500ms, 1m30s)", s)
		}
		return 0, fmt.Errorf("invalid duration %q: want e.g. 10s, 500ms, 1m30s", s)
	}
	return d, nil
}

// nodeError is how a custom decoder reports a bad value without stopping the
// decoder: yaml.v3 collects *yaml.TypeError and goes on. The "line L column C"
// prefix lets the loader find the key path of the value.
// parseInto parses text with parse into *dst, which an error leaves as it
// was.
func parseInto[T any](dst *T, text string, parse func(string) (T, error)) error {
	v, err := parse(text)
	if err != nil {
		return err
	}
	*dst = v
	return nil
}

// parseScalar parses the YAML scalar n with parse into *dst; want says what
// is wanted, for a node that is not a scalar.
func parseScalar[T any](dst *T, n *yaml.Node, want string, parse func(string) (T, error)) error {
	if n.Kind != yaml.ScalarNode {
		return nodeError(n, "want %s, got %s", want, describeNode(n))
	}
	if err := parseInto(dst, n.Value, parse); err != nil {
		return nodeError(n, "%v", err)
	}
	return nil
}

func nodeError(n *yaml.Node, format string, args ...any) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d column %d: %s", n.Line, n.Column, fmt.Sprintf(format, args...))}}
}

// describeNode names what a node holds, for "want X, got Y" messages.
func describeNode(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	v := n.Value
	if len(v) > 40 {
		v = v[:37] + "..."
	}
	switch n.ShortTag() {
	case "!!int":
		return "integer " + v
	case "!!float":
		return "number " + v
	case "!!bool":
		return v
	case "!!null":
		return "null"
	}
	return "string " + strconv.Quote(v)
}

// printable reports whether s has no control characters, for names that end
// up in topics, file names and logs.
func printable(s string) bool {
	for _, r := range s {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}
