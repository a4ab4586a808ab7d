package models

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// FuzzManifest feeds arbitrary bytes to the strict decoder. It must never
// panic, and a manifest that decodes and validates must survive an
// encode/decode round trip unchanged and still validate. The seed corpus is
// testdata/manifests plus testdata/fuzz/FuzzManifest.
func FuzzManifest(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "manifests", "*.json"))
	for _, p := range files {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodeManifest(data)
		if err != nil {
			return
		}
		if m.Validate() != nil {
			return
		}
		b, err := m.Encode()
		if err != nil {
			t.Fatalf("valid manifest does not encode: %v", err)
		}
		m2, err := DecodeManifest(b)
		if err != nil {
			t.Fatalf("re-decode: %v\n%s", err, b)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip changed the manifest:\n%#v\n%#v", m, m2)
		}
		if err := m2.Validate(); err != nil {
			t.Fatalf("round trip broke validation: %v", err)
		}
	})
}
