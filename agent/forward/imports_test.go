package forward

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestForwardersOwnTheirDefaults: no forwarder package imports
// agent/config; the configuration takes its defaults from theirs.
func TestForwardersOwnTheirDefaults(t *testing.T) {
	const forbidden = "github.com/vigil-edge/vigil/agent/config"
	n := 0
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") {
			return err
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		n++
		for _, im := range f.Imports {
			if p, _ := strconv.Unquote(im.Path.Value); p == forbidden || strings.HasPrefix(p, forbidden+"/") {
				t.Errorf("%s imports %s", path, p)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n < 10 {
		t.Fatalf("only %d Go files read", n)
	}
}
