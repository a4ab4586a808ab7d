package config

import (
	"fmt"
	"reflect"
	"strings"
)

// suggest offers the known key closest to an unknown one, if any is close.
func suggest(path string) string {
	parent, name := "", path
	if i := strings.LastIndex(path, "."); i >= 0 {
		parent, name = path[:i], path[i+1:]
	}
	t := typeAt(parent)
	if t == nil {
		return ""
	}
	best, bestD := "", 3
	for i := 0; i < t.NumField(); i++ {
		k := yamlName(t.Field(i))
		if k == "" {
			continue
		}
		if d := editDistance(strings.ToLower(name), k); d < bestD {
			best, bestD = k, d
		}
	}
	for i := 0; i < t.NumField() && best == "" && len(name) >= 2; i++ {
		if k := yamlName(t.Field(i)); k != "" && (strings.HasPrefix(k, name) || strings.HasPrefix(name, k)) {
			best = k
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// typeAt returns the struct type at a key path such as "sources[0].mqtt".
func typeAt(path string) reflect.Type {
	t := fieldTypeAt(path)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct {
		return nil
	}
	return t
}

// fieldTypeAt returns the Go type of the value at a key path such as
// "sources[0].mqtt.qos" or "streams[1]", or nil when there is no such key.
func fieldTypeAt(path string) reflect.Type {
	t := reflect.TypeOf(Config{})
	if path == "" {
		return t
	}
	for _, seg := range strings.Split(path, ".") {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t.Kind() == reflect.Map {
			return t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return nil
		}
		name, idx, _ := strings.Cut(seg, "[")
		f, ok := fieldByKey(t, name)
		if !ok {
			return nil
		}
		t = f.Type
		for ; idx != ""; _, idx, _ = strings.Cut(idx, "[") {
			if t.Kind() != reflect.Slice {
				return nil
			}
			t = t.Elem()
		}
	}
	return t
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
