package config

import (
	"os"
	"strings"
	"testing"

	"github.com/vigil-edge/vigil/agent/source"
)

func TestTimeLayouts(t *testing.T) {
	for _, tc := range []struct {
		f  string
		ok bool
	}{
		{"2006-01-02 15:04:05", true}, // the documented layout (SKAB's), which was rejected
		{"2006-01-02T15:04:05.000Z07:00", true},
		{"02/01/2006 15:04", true},
		{"20060102150405", true},
		{"Jan _2 15:04:05", true},
		{"yesterday", false},
		{"2", true},
		{"Monday", false},        // no digit: not a timestamp the decoders read
		{"1999-12-31", false},    // digits, but none is a layout element
		{"202-1-2 1:4:5", false}, // day and zero-padded day side by side: does not read back
	} {
		if err := source.CheckTimeLayout(tc.f); (err == nil) != tc.ok {
			t.Errorf("CheckTimeLayout(%q) = %v, want ok %v", tc.f, err, tc.ok)
		}
	}
}

// TestExampleCommentedSourcesAreValid uncomments the example's MQTT and
// replay sources, as a user would, and checks their timestamp formats pass.
func TestExampleCommentedSourcesAreValid(t *testing.T) {
	b, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	uncomment := false
	found := 0
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(line, "  # An MQTT source") || strings.HasPrefix(line, "  # A CSV or JSONL replay"):
			uncomment = true
			found++
			out = append(out, line)
			continue
		case strings.TrimSpace(line) == "":
			uncomment = false
		}
		if uncomment {
			line = strings.Replace(line, "  # ", "  ", 1)
		}
		out = append(out, line)
	}
	if found != 2 {
		t.Fatalf("found %d commented sources in the example, want 2", found)
	}
	text := strings.Join(out, "\n")
	if !strings.Contains(text, `    timestamp_format: "2006-01-02 15:04:05"`) {
		t.Fatal("the example's replay block does not show timestamp_format \"2006-01-02 15:04:05\"")
	}
	path := writeFile(t, t.TempDir(), "vigil.yaml", text, 0o644)
	errs, warns := check(path, nil, nil)
	for _, p := range append(errs, warns...) {
		if strings.Contains(p.Path, "timestamp_format") || strings.Contains(p.Path, "fields") {
			t.Errorf("uncommented example: %s", p)
		}
	}
	t.Logf("other problems of the uncommented example (paths relative to a temp dir):\n%s%s", errs, warns)
}
