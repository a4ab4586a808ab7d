package models

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
)

var (
	manifestType    = reflect.TypeFor[Manifest]()
	unmarshalerType = reflect.TypeFor[json.Unmarshaler]()
)

// checkKeys walks a JSON document alongside the Go type it will be decoded
// into and reports, with their paths, every object key that is not exactly a
// field's JSON name (encoding/json would accept "Name" for "name") and every
// key given twice (encoding/json would keep the last), and values that
// their type's UnmarshalJSON refuses (a duration such as "ten minutes"). It
// leaves other type errors to encoding/json, and reports malformed JSON as
// one problem.
func checkKeys(data []byte, t reflect.Type) []Problem {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	w := keyWalker{dec: dec}
	tok, err := dec.Token()
	if err != nil {
		return []Problem{{Path: "(document)", Msg: syntaxMsg(err)}}
	}
	if err := w.walk(tok, t, ""); err != nil {
		return append(w.problems, Problem{Path: "(document)", Msg: syntaxMsg(err)})
	}
	return w.problems
}

func syntaxMsg(err error) string {
	if errors.Is(err, io.EOF) {
		return "unexpected end of JSON"
	}
	return "invalid JSON: " + err.Error()
}

type keyWalker struct {
	dec      *json.Decoder
	problems []Problem
}

// walk checks the value that starts with tok, which has been read, against
// type t at path.
func (w *keyWalker) walk(tok json.Token, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if reflect.PointerTo(t).Implements(unmarshalerType) {
		// A scalar for a type with its own decoding (Duration, time.Time):
		// decode it here, where its path is known.
		if _, delim := tok.(json.Delim); !delim {
			b, err := json.Marshal(tok)
			if err == nil {
				err = reflect.New(t).Interface().(json.Unmarshaler).UnmarshalJSON(b)
			}
			if err != nil {
				w.problems = append(w.problems, Problem{Path: path, Msg: err.Error()})
			}
		}
		return w.skip(tok)
	}
	switch {
	case t.Kind() == reflect.Struct && tok == json.Delim('{'):
		fields := jsonFields(t)
		seen := map[string]bool{}
		for w.dec.More() {
			kt, err := w.dec.Token()
			if err != nil {
				return err
			}
			key, _ := kt.(string)
			vt, err := w.dec.Token()
			if err != nil {
				return err
			}
			p := joinPath(path, key)
			f, known := fields[key]
			switch {
			case !known:
				msg := "unknown field"
				if near := nearField(fields, key); near != "" {
					msg += fmt.Sprintf(" (did you mean %q?)", near)
				}
				w.problems = append(w.problems, Problem{Path: p, Msg: msg})
				if err := w.skip(vt); err != nil {
					return err
				}
				continue
			case seen[key]:
				w.problems = append(w.problems, Problem{Path: p, Msg: "given more than once"})
			}
			seen[key] = true
			if err := w.walk(vt, f, p); err != nil {
				return err
			}
		}
		_, err := w.dec.Token() // '}'
		return err
	case t.Kind() == reflect.Slice && tok == json.Delim('['):
		for i := 0; w.dec.More(); i++ {
			vt, err := w.dec.Token()
			if err != nil {
				return err
			}
			if err := w.walk(vt, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		_, err := w.dec.Token() // ']'
		return err
	}
	return w.skip(tok)
}

// skip consumes the rest of the value that starts with tok.
func (w *keyWalker) skip(tok json.Token) error {
	if tok != json.Delim('{') && tok != json.Delim('[') {
		return nil
	}
	for depth := 1; depth > 0; {
		t, err := w.dec.Token()
		if err != nil {
			return err
		}
		switch t {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
	}
	return nil
}

// jsonFields maps a struct's JSON field names to their types.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	m := make(map[string]reflect.Type, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		m[name] = f.Type
	}
	return m
}

// nearField returns the field that key differs from only in case or in
// '-' for '_', if any.
func nearField(fields map[string]reflect.Type, key string) string {
	norm := func(s string) string { return strings.ReplaceAll(strings.ToLower(s), "-", "_") }
	for name := range fields {
		if norm(name) == norm(key) {
			return name
		}
	}
	return ""
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}
