package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// maxFileBytes bounds the config file: anything larger is a mistake.
const maxFileBytes = 4 << 20

// Load builds a configuration from the defaults, the YAML file at path and
// the environment, read through env (os.LookupEnv in production; nil means no
// environment). It does not validate: apply flags with Set, then call
// Validate. A decoding problem — unknown key, wrong type, bad duration — is
// returned as an *Error listing every such problem with its key path.
func Load(path string, env func(string) (string, bool)) (*Config, error) {
	c, ps, err := load(path, env)
	if err != nil {
		return nil, err
	}
	if len(ps) > 0 {
		return nil, &Error{File: path, Problems: ps}
	}
	return c, nil
}

// Parse is Load for a document already in memory; relative paths in it are
// resolved against dir.
func Parse(data []byte, dir string, env func(string) (string, bool)) (*Config, error) {
	c, ps := parse(data, dir, env)
	if len(ps) > 0 {
		return nil, &Error{Problems: ps}
	}
	return c, nil
}

// load reads the file and parses it, returning the configuration even when
// there are problems so Check can validate what was understood.
func load(path string, env func(string) (string, bool)) (*Config, Problems, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return nil, nil, fmt.Errorf("read config %s: %w", path, err)
	}
	if len(data) > maxFileBytes {
		return nil, nil, fmt.Errorf("read config %s: larger than %s", path, ByteSize(maxFileBytes))
	}
	c, ps := parse(data, filepath.Dir(path), env)
	return c, ps, nil
}

// parse runs the layers: defaults, file, environment. It always returns a
// usable *Config; problems says what could not be applied.
func parse(data []byte, dir string, env func(string) (string, bool)) (*Config, Problems) {
	c := &Config{where: map[string]string{}}
	var ps Problems

	root, err := parseNode(data)
	if err != nil {
		ps = append(ps, syntaxProblem(data, err))
		root = nil
	}
	idx := newIndex(root)
	for p, line := range idx.lines {
		c.where[p] = "line " + strconv.Itoa(line)
	}
	if root != nil {
		dps, fatal := decode(data, c, idx)
		if fatal {
			// yaml.v3 gave up (excessive aliasing, say): what it
			// decoded is not worth completing.
			*c = Config{where: c.where}
			root = nil
		}
		ps = append(ps, dps...)
		ps = append(ps, idx.truncatedInts()...)
	}
	budget := maxLookups
	applyDefaults(root, reflect.ValueOf(c).Elem(), reflect.ValueOf(Default()).Elem(), &budget)
	for i := range c.Sources {
		if c.Sources[i].Type == SourceSimulator && c.Sources[i].Simulator == nil {
			c.Sources[i].Simulator = defaultSource().Simulator
		}
	}
	resolvePaths(reflect.ValueOf(c).Elem(), dir)
	if env != nil {
		ps = append(ps, c.applyEnv(env)...)
	}
	return c, dedup(ps)
}

// dedup drops repeated problems: yaml.v3 reports a bad value once for every
// alias that refers to it.
func dedup(ps Problems) Problems {
	seen := make(map[Problem]bool, len(ps))
	out := ps[:0]
	for _, p := range ps {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	return out
}

// parseNode parses the document into a node tree, refusing more than one
// document and a top level that is not a mapping. An empty document gives nil.
func parseNode(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, err
	}
	var more yaml.Node
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("line %d: more than one YAML document", more.Line)
	}
	n := &doc
	if n.Kind == yaml.DocumentNode && len(n.Content) == 1 {
		n = n.Content[0]
	}
	switch {
	case n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null":
		return nil, nil
	case n.Kind != yaml.MappingNode:
		return nil, fmt.Errorf("line %d: the top level must be a mapping of keys, got %s", n.Line, describeNode(n))
	}
	return &doc, nil
}

// decode decodes the file strictly into c and turns yaml.v3's messages into
// problems with key paths. fatal reports that yaml.v3 stopped early rather
// than collecting type errors.
func decode(data []byte, c *Config, idx *index) (ps Problems, fatal bool) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err := dec.Decode(c)
	if err == nil {
		return nil, false
	}
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return Problems{syntaxProblem(data, err)}, true
	}
	ps = make(Problems, 0, len(te.Errors))
	for _, msg := range te.Errors {
		ps = append(ps, idx.rewrite(msg))
	}
	return ps, false
}

// resolvePaths makes the relative paths of the fields tagged conf:"path"
// relative to dir.
func resolvePaths(v reflect.Value, dir string) {
	if dir == "" || dir == "." {
		return
	}
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if yamlName(f) == "" {
			continue
		}
		fv := v.Field(i)
		switch {
		case f.Tag.Get("conf") == "path":
			if p := fv.String(); p != "" && !filepath.IsAbs(p) {
				fv.SetString(filepath.Join(dir, p))
			}
		case f.Tag.Get("conf") == "keys": // "@path" entries name files
			for j := 0; j < fv.Len(); j++ {
				if p, ok := strings.CutPrefix(fv.Index(j).String(), "@"); ok && p != "" && !filepath.IsAbs(p) {
					fv.Index(j).SetString("@" + filepath.Join(dir, p))
				}
			}
		case f.Type.Kind() == reflect.Struct && !isLeaf(f.Type):
			resolvePaths(fv, dir)
		case f.Type.Kind() == reflect.Pointer && f.Type.Elem().Kind() == reflect.Struct:
			if !fv.IsNil() {
				resolvePaths(fv.Elem(), dir)
			}
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
			for j := 0; j < fv.Len(); j++ {
				resolvePaths(fv.Index(j), dir)
			}
		}
	}
}

// sortedKeys returns a map's keys in order.
func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
