// Package strictjson decodes the JSON objects of command payloads strictly:
// one object of at most a given size, with only the allowed fields (names
// matched exactly, unlike encoding/json's case-insensitive matching), none
// twice, nothing after it, and fields read by rules that check their type
// and limits. Every problem is reported, each naming its field, in words
// meant for the sender of the payload ("field "id": want a string, got a
// number").
package strictjson

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

// Object is a decoded JSON object: its members and the problems found in
// them so far. Read its fields with Str, Int, Float or Raw; Err reports
// every problem.
type Object struct {
	members map[string]json.RawMessage
	keys    []string // of members, in the payload's order
	errs    []string
}

// Decode reads payload as one JSON object of at most limit bytes. What
// stops the decoding (too large, empty, malformed, not an object) is its
// error; an unknown field (one not in allowed) or a duplicate one is a
// problem recorded in the Object, the first value of a duplicate kept.
func Decode(payload []byte, limit int, allowed ...string) (*Object, error) {
	if len(payload) > limit {
		return nil, fmt.Errorf("payload of %d bytes exceeds %d", len(payload), limit)
	}
	if len(bytes.TrimSpace(payload)) == 0 {
		if slices.Contains(allowed, "id") {
			return nil, errors.New(`empty payload: want a JSON object with an "id"`)
		}
		return nil, errors.New("empty payload: want a JSON object")
	}
	if !json.Valid(payload) {
		var v any
		err := json.Unmarshal(payload, &v)
		if se, ok := errors.AsType[*json.SyntaxError](err); ok {
			return nil, fmt.Errorf("malformed JSON at offset %d: %v", se.Offset, se)
		}
		return nil, fmt.Errorf("malformed JSON: %v", err)
	}
	if k := Kind(payload); k != "an object" {
		return nil, fmt.Errorf("payload must be a JSON object, got %s", k)
	}
	o := &Object{members: map[string]json.RawMessage{}}
	err := eachMember(payload, func(key string, v json.RawMessage) {
		switch {
		case !slices.Contains(allowed, key):
			o.errs = append(o.errs, fmt.Sprintf("unknown field %q", key))
		case o.members[key] != nil:
			o.errs = append(o.errs, fmt.Sprintf("duplicate field %q", key))
		default:
			o.members[key] = v
			o.keys = append(o.keys, key)
		}
	})
	if err != nil { // cannot happen: payload is a valid object
		return nil, fmt.Errorf("malformed JSON: %w", err)
	}
	return o, nil
}

// eachMember calls fn with the key and the value of every member of the
// valid JSON object payload, in order.
func eachMember(payload []byte, fn func(key string, v json.RawMessage)) error {
	dec := json.NewDecoder(bytes.NewReader(payload))
	if _, err := dec.Token(); err != nil {
		return err
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, _ := tok.(string)
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return err
		}
		fn(key, v)
	}
	return nil
}

// Keys returns the keys of the allowed fields present, in the payload's
// order.
func (o *Object) Keys() []string { return slices.Clone(o.keys) }

// Bad records a problem of field key: `field "key": ` and the message.
func (o *Object) Bad(key, format string, args ...any) {
	o.errs = append(o.errs, fmt.Sprintf("field %q: ", key)+fmt.Sprintf(format, args...))
}

// Err returns every problem recorded, separated by "; "; nil if none.
func (o *Object) Err() error {
	if len(o.errs) == 0 {
		return nil
	}
	return errors.New(strings.Join(o.errs, "; "))
}

// Raw returns the raw value of field key and whether it is present; a
// required field that is absent is a problem.
func (o *Object) Raw(key string, required bool) (json.RawMessage, bool) {
	v, ok := o.members[key]
	if !ok && required {
		o.errs = append(o.errs, fmt.Sprintf("missing field %q", key))
	}
	return v, ok
}

// Str reads a string field of at most maxLen bytes without control
// characters; a required one must be present and non-empty. It returns ""
// for a field that is absent or has a problem.
func (o *Object) Str(key string, required bool, maxLen int) string {
	v, ok := o.Raw(key, required)
	if !ok {
		return ""
	}
	if k := Kind(v); k != "a string" {
		o.Bad(key, "want a string, got %s", k)
		return ""
	}
	var s string
	if err := json.Unmarshal(v, &s); err != nil {
		o.Bad(key, "%v", err)
		return ""
	}
	switch {
	case !utf8.ValidString(s):
		o.Bad(key, "invalid UTF-8")
	case required && s == "":
		o.Bad(key, "must not be empty")
	case len(s) > maxLen:
		o.Bad(key, "longer than %d bytes", maxLen)
	case strings.ContainsFunc(s, unicode.IsControl):
		o.Bad(key, "must not contain control characters")
	default:
		return s
	}
	return ""
}

// Int reads a whole-number field within [lo, hi]. It returns def for a
// field that is absent or has a problem.
func (o *Object) Int(key string, required bool, lo, hi, def int64) int64 {
	v, ok := o.Raw(key, required)
	if !ok {
		return def
	}
	if k := Kind(v); k != "a number" {
		o.Bad(key, "want a number, got %s", k)
		return def
	}
	n := json.Number(bytes.TrimSpace(v))
	x, err := n.Int64()
	if err != nil {
		fl, ferr := n.Float64()
		switch {
		case ferr != nil || fl != math.Trunc(fl):
			o.Bad(key, "want a whole number, got %s", n)
		case fl < float64(lo) || fl > float64(hi):
			o.Bad(key, "%s is out of range [%d, %d]", n, lo, hi)
		default: // 1e3, 10.0
			o.Bad(key, "want a whole number without a fraction or an exponent, got %s", n)
		}
		return def
	}
	if x < lo || x > hi {
		o.Bad(key, "%d is out of range [%d, %d]", x, lo, hi)
		return def
	}
	return x
}

// Float reads a number field that a float64 holds. ok is false for a
// field that is absent or has a problem.
func (o *Object) Float(key string, required bool) (f float64, ok bool) {
	v, ok := o.Raw(key, required)
	if !ok {
		return 0, false
	}
	if k := Kind(v); k != "a number" {
		o.Bad(key, "want a number, got %s", k)
		return 0, false
	}
	if err := json.Unmarshal(v, &f); err != nil {
		o.Bad(key, "%s is not a representable number", v)
		return 0, false
	}
	return f, true
}

// Peek digs the string field key out of a payload that is not decoded (it
// failed to, or it is not to be acted on), so that a reply can still name
// its request. It returns "" if the payload is larger than limit, not
// valid JSON or not an object, or if the field is absent, not a string,
// longer than maxLen bytes or has control characters. Of duplicate fields,
// the last acceptable one wins.
func Peek(payload []byte, limit int, key string, maxLen int) string {
	if len(payload) > limit || !json.Valid(payload) || Kind(payload) != "an object" {
		return ""
	}
	var s string
	_ = eachMember(payload, func(k string, v json.RawMessage) {
		var t string
		if k == key && Kind(v) == "a string" && json.Unmarshal(v, &t) == nil &&
			len(t) <= maxLen && !strings.ContainsFunc(t, unicode.IsControl) {
			s = t
		}
	})
	return s
}

// Kind names the kind of a raw JSON value, for "want X, got Y": "a
// string", "a number", "an object", "an array", "a boolean", "null", or
// "nothing" for blanks.
func Kind(v []byte) string {
	v = bytes.TrimLeft(v, " \t\r\n")
	if len(v) == 0 {
		return "nothing"
	}
	switch v[0] {
	case '"':
		return "a string"
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}
