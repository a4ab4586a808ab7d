// Package dist holds the packaging scripts' Go-side checks.
package dist

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestThirdPartyNoticesListEveryLinkedModule fails when a module that the
// vigil binary links (go list -deps of ./agent, the same set `go version -m
// bin/vigil` shows) has no row in THIRD_PARTY_NOTICES.md, and when a row
// names a module that is no longer linked.
func TestThirdPartyNoticesListEveryLinkedModule(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go is not on PATH")
	}
	cmd := exec.Command("go", "list", "-deps", "-f", "{{with .Module}}{{if not .Main}}{{.Path}}{{end}}{{end}}",
		"github.com/vigil-edge/vigil/agent")
	cmd.Dir = "../.."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	linked := map[string]bool{}
	for _, m := range strings.Fields(string(out)) {
		linked[m] = true
	}
	if len(linked) == 0 {
		t.Fatal("go list found no linked modules")
	}
	notices, err := os.ReadFile("../../THIRD_PARTY_NOTICES.md")
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, line := range strings.Split(string(notices), "\n") {
		if rest, ok := strings.CutPrefix(line, "| `"); ok {
			if mod, _, ok := strings.Cut(rest, "`"); ok {
				listed[mod] = true
			}
		}
	}
	for m := range linked {
		if !listed[m] {
			t.Errorf("module %s is linked into vigil but has no row in THIRD_PARTY_NOTICES.md", m)
		}
	}
	for m := range listed {
		if !linked[m] {
			t.Errorf("THIRD_PARTY_NOTICES.md lists %s, which vigil no longer links", m)
		}
	}
}
