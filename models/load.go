//go:build cgo

package models

import (
	"fmt"

	"github.com/vigil-edge/vigil/inference"
)

// Load reads the model at path, which names both files without their
// extension: dir/NAME loads dir/NAME.json and dir/NAME.tflite. It decodes
// the manifest strictly, validates it, verifies the model file's SHA-256,
// loads it with inference.Load and checks its tensors against the manifest.
// opts.Expect is ignored: the shapes the manifest declares are checked
// instead, with an error that names the manifest fields that disagree.
func Load(path string, opts inference.Options) (*Model, error) {
	m, model, err := ReadFiles(path)
	if err != nil {
		return nil, err
	}
	opts.Expect = nil // compared below, with the manifest's field names
	s, err := inference.Load(model, opts)
	if err != nil {
		return nil, fmt.Errorf("load model %s: %w", path, err)
	}
	md, err := New(m, s)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("load model %s: %w", path, err)
	}
	return md, nil
}
