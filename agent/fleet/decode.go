// Package fleet holds what the device and the operator's side share to
// manage models and settings over MQTT: the payloads of the relearn, reset
// and deploy-model commands and their strict decoders, and model
// signatures (sign.go).
package fleet

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits of a command's fields.
const (
	// MaxChunk is the largest deploy-model chunk, in bytes before base64.
	MaxChunk     = 1 << 20
	MaxIDLen     = 128
	MaxStreamLen = 128
	// MaxPayload bounds any command payload this package decodes: a
	// deploy-model chunk of MaxChunk bytes in base64 with its fields.
	MaxPayload = MaxChunk*4/3 + 4096
)

// object decodes payload as one JSON object whose keys are all in allowed
// (exact, case-sensitive), none twice, nothing after it. It returns the raw
// values; every problem is reported, each naming its field.
func object(payload []byte, allowed ...string) (map[string]json.RawMessage, error) {
	if len(payload) > MaxPayload {
		return nil, fmt.Errorf("payload of %d bytes exceeds %d", len(payload), MaxPayload)
	}
	if len(bytes.TrimSpace(payload)) == 0 {
		return nil, errors.New(`empty payload: want a JSON object with an "id"`)
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return nil, fmt.Errorf("malformed JSON: %w", err)
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return nil, errors.New("payload must be a JSON object")
	}
	out := map[string]json.RawMessage{}
	var errs []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("malformed JSON: %w", err)
		}
		key, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, fmt.Errorf("malformed JSON: %w", err)
		}
		switch {
		case !slices.Contains(allowed, key):
			errs = append(errs, fmt.Sprintf("unknown field %q", key))
		case out[key] != nil:
			errs = append(errs, fmt.Sprintf("duplicate field %q", key))
		default:
			out[key] = v
		}
	}
	if _, err := dec.Token(); err != nil {
		return nil, fmt.Errorf("malformed JSON: %w", err)
	}
	if _, err := dec.Token(); err == nil {
		return nil, errors.New("data after the JSON object")
	}
	if len(errs) > 0 {
		return out, errors.New(strings.Join(errs, "; "))
	}
	return out, nil
}

// fields collects the problems of one payload's fields.
type fields struct {
	m    map[string]json.RawMessage
	errs []string
}

func (f *fields) bad(key, format string, args ...any) {
	f.errs = append(f.errs, fmt.Sprintf("field %q: ", key)+fmt.Sprintf(format, args...))
}

func (f *fields) err() error {
	if len(f.errs) == 0 {
		return nil
	}
	return errors.New(strings.Join(f.errs, "; "))
}

// str decodes a string field; required ones must be present and non-empty.
func (f *fields) str(key string, required bool, maxLen int) string {
	v, ok := f.m[key]
	if !ok {
		if required {
			f.errs = append(f.errs, fmt.Sprintf("missing field %q", key))
		}
		return ""
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		f.bad(key, "want a string")
		return ""
	}
	switch {
	case !utf8.ValidString(s):
		f.bad(key, "invalid UTF-8")
	case required && s == "":
		f.bad(key, "must not be empty")
	case len(s) > maxLen:
		f.bad(key, "longer than %d bytes", maxLen)
	case strings.ContainsFunc(s, unicode.IsControl):
		f.bad(key, "must not contain control characters")
	default:
		return s
	}
	return ""
}

// integer decodes a whole-number field within [lo, hi]; absent: def.
func (f *fields) integer(key string, required bool, lo, hi, def int64) int64 {
	v, ok := f.m[key]
	if !ok {
		if required {
			f.errs = append(f.errs, fmt.Sprintf("missing field %q", key))
		}
		return def
	}
	var n json.Number
	if len(v) == 0 || v[0] == '"' || json.Unmarshal(v, &n) != nil {
		f.bad(key, "want a number")
		return def
	}
	x, err := n.Int64()
	if err != nil {
		fl, ferr := n.Float64()
		if ferr != nil || fl != math.Trunc(fl) {
			f.bad(key, "want a whole number, got %s", n)
			return def
		}
		f.bad(key, "%s is out of range [%d, %d]", n, lo, hi)
		return def
	}
	if x < lo || x > hi {
		f.bad(key, "%d is out of range [%d, %d]", x, lo, hi)
		return def
	}
	return x
}

// RequestID digs the id out of a payload that failed to decode, so that an
// error reply can still be matched to its request; "" if there is none.
func RequestID(payload []byte) string {
	if len(payload) > MaxPayload {
		return ""
	}
	var v struct {
		ID string `json:"id"`
	}
	if json.Unmarshal(payload, &v) != nil || len(v.ID) > MaxIDLen || !utf8.ValidString(v.ID) {
		return ""
	}
	return v.ID
}

// Relearn is the relearn command: start a new learning period for Stream,
// of Samples samples (0: the stream's learn.samples).
type Relearn struct {
	ID      string `json:"id"`
	Stream  string `json:"stream"`
	Samples int    `json:"samples,omitempty"`
}

// MaxLearnSamples bounds a relearn's samples.
const MaxLearnSamples = 10_000_000

// DecodeRelearn decodes {"id": string, "stream": string, "samples"?: integer
// in [1, MaxLearnSamples]} strictly.
func DecodeRelearn(payload []byte) (Relearn, error) {
	m, err := object(payload, "id", "stream", "samples")
	if err != nil {
		return Relearn{}, err
	}
	f := fields{m: m}
	r := Relearn{ID: f.str("id", true, MaxIDLen), Stream: f.str("stream", true, MaxStreamLen)}
	r.Samples = int(f.integer("samples", false, 1, MaxLearnSamples, 0))
	return r, f.err()
}

// Reset is the reset command: return Stream to the config's values.
type Reset struct {
	ID     string `json:"id"`
	Stream string `json:"stream"`
}

// DecodeReset decodes {"id": string, "stream": string} strictly.
func DecodeReset(payload []byte) (Reset, error) {
	m, err := object(payload, "id", "stream")
	if err != nil {
		return Reset{}, err
	}
	f := fields{m: m}
	r := Reset{ID: f.str("id", true, MaxIDLen), Stream: f.str("stream", true, MaxStreamLen)}
	return r, f.err()
}
