package publish

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"
)

// errNotObject is returned for a record or payload that is not a JSON
// object.
var errNotObject = errors.New("not a JSON object")

// members calls fn with the raw key (quotes included) and the raw value of
// every top-level member of the JSON object src, in order. src must be valid
// JSON (check with json.Valid first); members reports errNotObject for
// anything but an object.
func members(src []byte, fn func(key, value []byte) error) error {
	i := skipSpace(src, 0)
	if i >= len(src) || src[i] != '{' {
		return errNotObject
	}
	i = skipSpace(src, i+1)
	if i < len(src) && src[i] == '}' {
		return nil
	}
	for i < len(src) {
		ks := i
		ke := skipString(src, i)
		i = skipSpace(src, ke)
		if i >= len(src) || src[i] != ':' {
			return errNotObject
		}
		vs := skipSpace(src, i+1)
		ve := skipValue(src, vs)
		if err := fn(src[ks:ke], src[vs:ve]); err != nil {
			return err
		}
		i = skipSpace(src, ve)
		if i >= len(src) {
			break
		}
		switch src[i] {
		case ',':
			i = skipSpace(src, i+1)
		case '}':
			return nil
		default:
			return errNotObject
		}
	}
	return errNotObject
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString returns the index after the JSON string starting at b[i].
func skipString(b []byte, i int) int {
	if i >= len(b) || b[i] != '"' {
		return i
	}
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(b)
}

// skipValue returns the index after the JSON value starting at b[i]; b is
// valid JSON.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return i
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return i
	default: // number, true, false, null
		for i < len(b) {
			switch b[i] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				return i
			}
			i++
		}
		return i
	}
}

// keyIs reports whether the raw JSON key (with quotes) is name. Keys with
// escapes are decoded, so "se\u0071" is "seq" too.
func keyIs(raw []byte, name string) bool {
	if len(raw) < 2 {
		return false
	}
	inner := raw[1 : len(raw)-1]
	if bytes.IndexByte(inner, '\\') < 0 {
		return string(inner) == name
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return false
	}
	return s == name
}

// stringValue returns the value of a raw JSON string, decoding escapes only
// when there are some. ok is false when raw is not a string.
func stringValue(raw []byte) (v []byte, ok bool) {
	if len(raw) < 2 || raw[0] != '"' {
		return nil, false
	}
	inner := raw[1 : len(raw)-1]
	if bytes.IndexByte(inner, '\\') < 0 && utf8.Valid(inner) {
		return inner, true
	}
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return nil, false
	}
	return []byte(s), true
}

// rewrite appends to dst the record src, a JSON object, with "seq" set to
// seq as its first member and "replayed" set to replayed as its last; any
// members of those names in src are dropped, the rest is copied verbatim.
// It also returns the string value of the member named key ("" when key is
// empty or the member is absent or not a string); the value aliases src or
// a fresh slice.
func rewrite(dst, src []byte, seq uint64, replayed bool, key string) (out, keyVal []byte, err error) {
	if !json.Valid(src) {
		return dst, nil, fmt.Errorf("record is not valid JSON")
	}
	out = append(dst, `{"seq":`...)
	out = strconv.AppendUint(out, seq, 10)
	err = members(src, func(k, v []byte) error {
		if keyIs(k, "seq") || keyIs(k, "replayed") {
			return nil
		}
		if key != "" && keyIs(k, key) {
			if s, ok := stringValue(v); ok {
				keyVal = s
			}
		}
		out = append(out, ',')
		out = append(out, k...)
		out = append(out, ':')
		out = append(out, v...)
		return nil
	})
	if err != nil {
		return dst, nil, fmt.Errorf("record: %w", err)
	}
	out = append(out, `,"replayed":`...)
	out = strconv.AppendBool(out, replayed)
	out = append(out, '}')
	return out, keyVal, nil
}

// appendLevel appends v to dst as one topic level: '/', '+', '#', NUL and
// invalid UTF-8 become '_', and an empty value becomes "_", so that a record
// can never publish to a wildcard or an unexpected depth.
func appendLevel(dst, v []byte) []byte {
	if len(v) == 0 {
		return append(dst, '_')
	}
	for len(v) > 0 {
		r, n := utf8.DecodeRune(v)
		switch {
		case r == utf8.RuneError && n <= 1, r == '/', r == '+', r == '#', r == 0:
			dst = append(dst, '_')
		default:
			dst = append(dst, v[:n]...)
		}
		v = v[n:]
	}
	return dst
}
