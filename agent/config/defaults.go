package config

import (
	"iter"
	"reflect"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// keyFields yields each field of struct type t that is a key, and its key;
// the field's index in t is f.Index[0].
func keyFields(t reflect.Type) iter.Seq2[reflect.StructField, string] {
	return func(yield func(reflect.StructField, string) bool) {
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if name := yamlName(f); name != "" && !yield(f, name) {
				return
			}
		}
	}
}

// yamlName is a field's key, or "" for fields that are not keys.
func yamlName(f reflect.StructField) string {
	if !f.IsExported() {
		return ""
	}
	name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
	if name == "-" {
		return ""
	}
	return name
}

func fieldByKey(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		if f := t.Field(i); yamlName(f) == key {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

var (
	yamlUnmarshaler = reflect.TypeFor[yaml.Unmarshaler]()
	durationType    = reflect.TypeFor[time.Duration]()
)

// isLeaf reports whether values of t are scalars in the file: everything but
// structs, except the structs that decode themselves (Rate).
func isLeaf(t reflect.Type) bool {
	if t.Kind() != reflect.Struct {
		return true
	}
	return reflect.PointerTo(t).Implements(yamlUnmarshaler)
}

// applyDefaults gives every key that the file does not set (or sets to null)
// its default. It walks the file's node tree beside the value: v was decoded
// from n, def holds the defaults. Lists and maps that the file sets replace
// the default rather than merge with it; list items get the defaults of their
// element type (see elemDefault); an absent type block stays nil.
func applyDefaults(n *yaml.Node, v, def reflect.Value, budget *int) {
	n = deref(n, 0)
	for f, name := range keyFields(v.Type()) {
		fv, fd := v.Field(f.Index[0]), def.Field(f.Index[0])
		child := lookup(n, name, 0, budget)
		if child == nil {
			if f.Type.Kind() != reflect.Pointer {
				fv.Set(clone(fd))
			}
			continue
		}
		switch {
		case f.Type.Kind() == reflect.Struct && !isLeaf(f.Type):
			applyDefaults(child, fv, fd, budget)
		case f.Type.Kind() == reflect.Pointer && f.Type.Elem().Kind() == reflect.Struct && !fv.IsNil():
			d := reflect.New(f.Type.Elem()).Elem()
			if !fd.IsNil() {
				d = fd.Elem()
			}
			applyDefaults(child, fv.Elem(), d, budget)
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
			items := deref(child, 0)
			if items == nil || items.Kind != yaml.SequenceNode {
				continue
			}
			ed := elemDefault(f.Type.Elem())
			for j := 0; j < fv.Len() && j < len(items.Content); j++ {
				applyDefaults(items.Content[j], fv.Index(j), ed, budget)
			}
		}
	}
}

// elemDefault returns the defaults of a list element type.
func elemDefault(t reflect.Type) reflect.Value {
	switch t {
	case reflect.TypeFor[Source]():
		s := defaultSource()
		return reflect.ValueOf(&s).Elem()
	case reflect.TypeFor[Stream]():
		s := defaultStream()
		return reflect.ValueOf(&s).Elem()
	}
	return reflect.New(t).Elem()
}

// clone copies maps and slices so defaults are never shared.
func clone(v reflect.Value) reflect.Value {
	switch v.Kind() {
	case reflect.Map:
		if v.IsNil() {
			return v
		}
		m := reflect.MakeMapWithSize(v.Type(), v.Len())
		iter := v.MapRange()
		for iter.Next() {
			m.SetMapIndex(iter.Key(), iter.Value())
		}
		return m
	case reflect.Slice:
		if v.IsNil() {
			return v
		}
		s := reflect.MakeSlice(v.Type(), v.Len(), v.Len())
		reflect.Copy(s, v)
		return s
	}
	return v
}

// deref follows documents and aliases to the node that holds the value; a
// null node is nil.
func deref(n *yaml.Node, depth int) *yaml.Node {
	for n != nil && depth < 32 {
		switch {
		case n.Kind == yaml.DocumentNode && len(n.Content) == 1:
			n = n.Content[0]
		case n.Kind == yaml.AliasNode:
			n = n.Alias
		case n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null":
			return nil
		default:
			return n
		}
		depth++
	}
	return nil
}

// maxLookups bounds the mappings visited while applying defaults, so that
// merge keys fanning out through aliases cannot make loading exponential.
const maxLookups = 100000

// lookup finds the value of key in mapping n, merge keys (<<) included; a key
// set to null counts as not set.
func lookup(n *yaml.Node, key string, depth int, budget *int) *yaml.Node {
	if n == nil || n.Kind != yaml.MappingNode || depth > 8 || *budget <= 0 {
		return nil
	}
	*budget--
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key && n.Content[i].ShortTag() != "!!merge" {
			return deref(n.Content[i+1], 0)
		}
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].ShortTag() != "!!merge" {
			continue
		}
		m := deref(n.Content[i+1], 0)
		if m == nil {
			continue
		}
		merged := []*yaml.Node{m}
		if m.Kind == yaml.SequenceNode {
			merged = m.Content
		}
		for _, mm := range merged {
			if v := lookup(deref(mm, 0), key, depth+1, budget); v != nil {
				return v
			}
		}
	}
	return nil
}
