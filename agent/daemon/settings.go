package daemon

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/fsx"
)

// Settings given by command (set-threshold, relearn, reset) persist in
// data_dir/settings.json, so that a reload or a restart keeps them. The file
// is replaced atomically (a temporary file, fsynced, renamed over it, the
// directory fsynced): a crash leaves the old settings or the new ones.
//
// Precedence, per stream: a threshold set by command overrides the config's
// threshold (and the model's calibrated one) until `reset` or `relearn`; a
// relearn's sample count stands in for the config's learn.samples.

const settingsFile = "settings.json"

// settingsVersion is the format of settings.json.
const settingsVersion = 1

// streamSettings are what commands changed for one stream.
type streamSettings struct {
	// Threshold, when > 0, was set by set-threshold at ThresholdAt.
	Threshold   float64   `json:"threshold,omitempty"`
	ThresholdAt time.Time `json:"threshold_at,omitzero"`
	// LearnSamples, when > 0, is the learning period a relearn started at
	// RelearnAt, for a stream whose config learns nothing.
	LearnSamples int       `json:"learn_samples,omitempty"`
	RelearnAt    time.Time `json:"relearn_at,omitzero"`
	// Model, when set, is the deployed model NAME@VERSION the stream serves
	// (data_dir/models/NAME@VERSION/NAME), deployed at ModelAt.
	Model   string    `json:"model,omitempty"`
	ModelAt time.Time `json:"model_at,omitzero"`
	// Previous is the deployed model Model replaced ("" for the config's
	// model), which rollback returns to.
	Previous string `json:"previous,omitempty"`
	// Shadow, when set, is the deployed model NAME@VERSION in its shadow
	// run since ShadowAt (shadow.go).
	Shadow   string    `json:"shadow,omitempty"`
	ShadowAt time.Time `json:"shadow_at,omitzero"`
}

func (s streamSettings) zero() bool { return s == streamSettings{} }

type settingsDoc struct {
	Version int                       `json:"version"`
	Streams map[string]streamSettings `json:"streams"`
}

// settingsStore is data_dir/settings.json in memory. It is safe for
// concurrent use.
type settingsStore struct {
	path string

	mu      sync.Mutex
	streams map[string]streamSettings
}

// loadSettings reads the settings of dataDir (at start); none when the
// file does not exist. A file that cannot be decoded is an error naming it.
// It removes what a crash left: temporary files of an interrupted write of
// settings.json and, once the settings are read, the leftovers of shadow
// runs that ended (cleanShadowLeftovers).
func loadSettings(dataDir string) (*settingsStore, error) {
	s := &settingsStore{path: filepath.Join(dataDir, settingsFile), streams: map[string]streamSettings{}}
	fsx.CleanTemps(filepath.Join(dataDir, settingsFile))
	b, err := os.ReadFile(s.path)
	if errors.Is(err, fs.ErrNotExist) {
		cleanShadowLeftovers(dataDir, s)
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("settings: %w", err)
	}
	doc, err := decodeSettings(b)
	if err != nil {
		return nil, fmt.Errorf("settings %s: %w", s.path, err)
	}
	for k, v := range doc.Streams {
		s.streams[k] = v
	}
	cleanShadowLeftovers(dataDir, s)
	return s, nil
}

// decodeSettings decodes settings.json strictly.
func decodeSettings(b []byte) (settingsDoc, error) {
	var doc settingsDoc
	if err := decodeStrict(b, &doc, "settings", settingsVersion); err != nil {
		return doc, err
	}
	for name, st := range doc.Streams {
		if st.Threshold < 0 || st.LearnSamples < 0 {
			return doc, fmt.Errorf("stream %q: negative value", name)
		}
		for _, m := range []string{st.Model, st.Previous, st.Shadow} {
			if n, v, ok := strings.Cut(m, "@"); m != "" && (!ok || n == "" || v == "" || strings.ContainsAny(m, `/\`) || strings.Contains(m, "..")) {
				return doc, fmt.Errorf("stream %q: model %q is not NAME@VERSION", name, m)
			}
		}
	}
	return doc, nil
}

// get returns a stream's settings (zero if none).
func (s *settingsStore) get(stream string) streamSettings {
	if s == nil {
		return streamSettings{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.streams[stream]
}

// update changes a stream's settings with fn and stores the file; on error
// nothing changed.
func (s *settingsStore) update(stream string, fn func(*streamSettings)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := make(map[string]streamSettings, len(s.streams)+1)
	for k, v := range s.streams {
		next[k] = v
	}
	st := next[stream]
	fn(&st)
	if st.zero() {
		delete(next, stream)
	} else {
		next[stream] = st
	}
	b, err := json.MarshalIndent(settingsDoc{Version: settingsVersion, Streams: next}, "", "  ")
	if err != nil {
		return fmt.Errorf("settings: %w", err)
	}
	if err := writeFileAtomic(s.path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("settings: %w", err)
	}
	s.streams = next
	return nil
}

// writeFileAtomic is fsx.WriteFileAtomic with the daemon's failpoint
// before the rename.
func writeFileAtomic(path string, data []byte, perm os.FileMode) error {
	var beforeRename func()
	if failpointsOn {
		beforeRename = func() { failpoint("write:" + filepath.Base(path) + ":before-rename") }
	}
	return fsx.WriteFileAtomic(path, data, perm, beforeRename)
}

// versioned is a file the daemon keeps under data_dir (settings.json, a
// shadow run's state) as decoded: it says its format version.
type versioned interface{ formatVersion() int }

func (doc *settingsDoc) formatVersion() int { return doc.Version }

// decodeStrict decodes b, one JSON object of format version (what names it
// in an error), into v: a field v does not have is an error, and so are
// anything after the object and another version.
func decodeStrict(b []byte, v versioned, what string, version int) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return fmt.Errorf("data after the %s object", what)
	}
	if got := v.formatVersion(); got != version {
		return fmt.Errorf("version %d, want %d", got, version)
	}
	return nil
}
