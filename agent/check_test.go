package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckConfig: the example config passes, with every model loaded and
// every source built; a broken one fails naming each problem's key path.
func TestCheckConfig(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := runCheckConfig(t.Context(), []string{"vigil.example.yaml"}, &out, &errOut); err != nil {
		t.Fatalf("the example config: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "vigil.example.yaml: ok") {
		t.Fatalf("output %q", out.String())
	}

	models, _ := filepath.Abs("../models")
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	text := `
device_id: x
models_dir: ` + models + `
sources:
  - {name: pump, type: simulator, simulator: {rate: -1}}
streams:
  - {name: pump1, source: nowhere, model: pump8}
`
	if err := os.WriteFile(bad, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	err := runCheckConfig(t.Context(), []string{bad}, &out, &errOut)
	if err == nil {
		t.Fatalf("a broken config passed:\n%s", out.String())
	}
	for _, want := range []string{"sources[0].simulator.rate", "streams[0].source"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output does not name %s:\n%s", want, out.String())
		}
	}
}

// TestCheckConfigWarnsDiskCap: a buffer cap larger than data_dir's
// filesystem can hold is a warning, with its key path.
func TestCheckConfigWarnsDiskCap(t *testing.T) {
	models, _ := filepath.Abs("../models")
	path := filepath.Join(t.TempDir(), "big.yaml")
	text := `
device_id: pump-station
data_dir: ` + t.TempDir() + `
models_dir: ` + models + `
buffer: {max_bytes: 64TiB}
sources:
  - {name: pump, type: simulator}
streams:
  - {name: pump1, source: pump, model: pump8}
`
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	if err := runCheckConfig(t.Context(), []string{path}, &out, &errOut); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "warning: buffer.max_bytes: buffer: the byte cap exceeds what the filesystem can hold") {
		t.Errorf("no warning about the cap:\n%s", out.String())
	}
}
