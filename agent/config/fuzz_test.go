package config

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// FuzzLoad feeds arbitrary documents through the whole loader — parse,
// strict decode, defaults, environment — and validation: none may panic,
// and whatever comes out must be printable. The seeds are the example and
// every testdata config; the corpus is in testdata/fuzz/FuzzLoad.
func FuzzLoad(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.yaml")
	seeds = append(seeds, examplePath)
	for _, s := range seeds {
		b, err := os.ReadFile(s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	env := envMap(map[string]string{"VIGIL_LOG_LEVEL": "debug", "VIGIL_MQTT_QOS_ALERT": "2"})
	f.Fuzz(func(t *testing.T, data []byte) {
		c, ps := parse(data, "testdata", env)
		if c == nil {
			t.Fatal("parse returned no config")
		}
		_ = ps.String()
		errs, warns := c.Validate()
		_ = errs.String() + warns.String()
		for _, k := range Keys() {
			if k.Env == "" {
				continue
			}
			if _, err := c.Get(k.Path); err != nil {
				t.Fatalf("Get(%s): %v", k.Path, err)
			}
		}
		if len(ps) == 0 {
			if _, err := Parse(data, "testdata", env); err != nil {
				t.Fatalf("parse found no problem but Parse did: %v", err)
			}
		}
	})
}

// FuzzSet checks that Set never panics and that the text parsers round-trip
// what they accept.
func FuzzSet(f *testing.F) {
	for _, k := range Keys() {
		if k.Env != "" {
			f.Add(k.Path, k.Default)
		}
	}
	f.Add("buffer.max_bytes", "1.5GiB")
	f.Add("dify.rate_limit", "3/30s")
	f.Add("streams[0].name", "x")
	f.Fuzz(func(t *testing.T, path, value string) {
		c := Default()
		_ = c.Set(path, value)
		if b, err := ParseByteSize(value); err == nil {
			if back, err := ParseByteSize(b.String()); err != nil || back != b {
				t.Fatalf("size %q → %q → %v, %v", value, b, back, err)
			}
		}
		if r, err := ParseRate(value); err == nil {
			if back, err := ParseRate(r.String()); err != nil || back != r {
				t.Fatalf("rate %q → %q → %v, %v", value, r, back, err)
			}
		}
		_, _ = ParseSwitch(value)
	})
}

// FuzzFiltersOverlap checks the overlap of MQTT topic filters that
// check-config uses to warn about subscriptions that reach no stream: it is
// symmetric, and for a topic without wildcards it is MQTT matching, checked
// against a regular expression built from the filter.
func FuzzFiltersOverlap(f *testing.F) {
	for _, s := range [][2]string{
		{"plant/pump1/telemetry", "plant/+/telemetry"},
		{"plant/#", "plant"},
		{"a/+", "a"},
		{"+/+", "a/b/c"},
		{"#", "x/y"},
		{"a//b", "a/+/b"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		if checkTopicFilter(a) != nil || checkTopicFilter(b) != nil {
			return
		}
		if filtersOverlap(a, b) != filtersOverlap(b, a) {
			t.Fatalf("filtersOverlap(%q, %q) = %v but not the other way round", a, b, filtersOverlap(a, b))
		}
		if strings.ContainsAny(b, "+#") {
			return
		}
		if got, want := filtersOverlap(a, b), filterRE(a).MatchString(b); got != want {
			t.Fatalf("filtersOverlap(%q, topic %q) = %v, want %v", a, b, got, want)
		}
	})
}

// filterRE is the regular expression of the topics an MQTT filter matches.
func filterRE(filter string) *regexp.Regexp {
	levels := strings.Split(filter, "/")
	var b strings.Builder
	b.WriteString("(?s)^")
	for i, l := range levels {
		switch {
		case l == "#" && i == 0:
			b.WriteString(".*")
		case l == "#":
			b.WriteString("(/.*)?") // "a/#" matches "a" too
		default:
			if i > 0 {
				b.WriteString("/")
			}
			if l == "+" {
				b.WriteString("[^/]*")
			} else {
				b.WriteString(regexp.QuoteMeta(l))
			}
		}
	}
	b.WriteString("$")
	return regexp.MustCompile(b.String())
}
