package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

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

var lineRE = regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`)

// syntaxProblem turns a parse error into a problem. yaml.v3 often gives the
// line where the enclosing block starts rather than the line at fault, so
// the line is taken from the shortest prefix of the document (in whole
// lines) that fails with the same message, when there is one.
func syntaxProblem(data []byte, err error) Problem {
	msg := err.Error()
	m := lineRE.FindStringSubmatch(msg)
	if m == nil {
		return Problem{Msg: strings.TrimPrefix(msg, "yaml: ")}
	}
	line := m[1]
	if l := faultLine(data, m[2]); l > 0 {
		line = strconv.Itoa(l)
	}
	return Problem{Where: "line " + line, Msg: m[2]}
}

// faultLine returns the first line n such that lines 1..n alone fail to parse
// with message msg, or 0. It gives up on long documents.
func faultLine(data []byte, msg string) int {
	if len(data) > 256<<10 {
		return 0
	}
	lines := bytes.SplitAfter(data, []byte("\n"))
	if len(lines) > 2000 {
		return 0
	}
	prefix := make([]byte, 0, len(data))
	for i, l := range lines {
		prefix = append(prefix, l...)
		var n yaml.Node
		dec := yaml.NewDecoder(bytes.NewReader(prefix))
		for {
			err := dec.Decode(&n)
			if err == nil {
				continue
			}
			if errors.Is(err, io.EOF) {
				break
			}
			if m := lineRE.FindStringSubmatch(err.Error()); m != nil && m[2] == msg {
				return i + 1
			}
			break
		}
	}
	return 0
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

// index knows, for every node of the file, its key path and position, so a
// message that yaml.v3 gives with only a line number can name its key.
type index struct {
	entries []entry
	lines   map[string]int // key path → line of its key (or list item)
}

type entry struct {
	line, col int
	path      string
	key       bool   // the node is a mapping key
	name      string // key name (for keys)
	node      *yaml.Node
}

func newIndex(root *yaml.Node) *index {
	idx := &index{lines: map[string]int{}}
	if root != nil {
		idx.walk(root, "")
	}
	return idx
}

// walk records n and its children. It does not follow aliases, so it is
// linear in the size of the file.
func (idx *index) walk(n *yaml.Node, path string) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			idx.walk(c, path)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := joinPath(path, k.Value)
			if k.Value == "<<" {
				p = path
			}
			idx.entries = append(idx.entries, entry{line: k.Line, col: k.Column, path: p, key: true, name: k.Value, node: k})
			if _, ok := idx.lines[p]; !ok && k.Value != "<<" {
				idx.lines[p] = k.Line
			}
			idx.entries = append(idx.entries, entry{line: v.Line, col: v.Column, path: p, node: v})
			idx.walk(v, p)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := path + "[" + strconv.Itoa(i) + "]"
			if _, ok := idx.lines[p]; !ok {
				idx.lines[p] = c.Line
			}
			idx.entries = append(idx.entries, entry{line: c.Line, col: c.Column, path: p, node: c})
			idx.walk(c, p)
		}
	}
}

func joinPath(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

var (
	unknownRE = regexp.MustCompile(`^line (\d+): field (.*) not found in type \S+$`)
	dupRE     = regexp.MustCompile(`^line (\d+): mapping key (".*") already defined at line (\d+)$`)
	typeRE    = regexp.MustCompile("^line (\\d+): cannot unmarshal (!!\\w+)(?: `(.*)`)? into (.+)$")
	customRE  = regexp.MustCompile(`^line (\d+) column (\d+): (.*)$`)
)

// rewrite turns one of yaml.v3's type errors into a problem.
func (idx *index) rewrite(msg string) Problem {
	if m := customRE.FindStringSubmatch(msg); m != nil {
		line, col := atoi(m[1]), atoi(m[2])
		for _, e := range idx.entries {
			if !e.key && e.line == line && e.col == col {
				return Problem{Path: e.path, Where: "line " + m[1], Msg: m[3]}
			}
		}
		return Problem{Where: "line " + m[1], Msg: m[3]}
	}
	if m := unknownRE.FindStringSubmatch(msg); m != nil {
		line := atoi(m[1])
		for _, e := range idx.entries {
			if e.key && e.line == line && e.name == m[2] {
				return Problem{Path: e.path, Where: "line " + m[1], Msg: "unknown key" + suggest(e.path)}
			}
		}
		return Problem{Where: "line " + m[1], Msg: fmt.Sprintf("unknown key %q", m[2])}
	}
	if m := dupRE.FindStringSubmatch(msg); m != nil {
		name, _ := strconv.Unquote(m[2])
		line := atoi(m[1])
		for _, e := range idx.entries {
			if e.key && e.line == line && e.name == name {
				return Problem{Path: e.path, Where: "line " + m[1], Msg: "duplicate key (first at line " + m[3] + ")"}
			}
		}
		return Problem{Where: "line " + m[1], Msg: fmt.Sprintf("duplicate key %q (first at line %s)", name, m[3])}
	}
	if m := typeRE.FindStringSubmatch(msg); m != nil {
		found := idx.typeErrorNode(atoi(m[1]), m[2], m[3], m[4])
		want := wantType(m[4])
		if found == nil {
			return Problem{Where: "line " + m[1], Msg: fmt.Sprintf("want %s, got %s", want, tagName(m[2]))}
		}
		msg := fmt.Sprintf("want %s, got %s", want, describeNode(found.node))
		if m[4] == "time.Duration" && found.node.Kind == yaml.ScalarNode {
			if _, err := parseDuration(found.node.Value); err != nil {
				msg = err.Error()
			}
		}
		return Problem{Path: found.path, Where: "line " + m[1], Msg: msg}
	}
	return Problem{Msg: msg}
}

// typeErrorNode finds the node a "cannot unmarshal" message is about: on
// its line, the value whose key expects goType, else one with the tag and
// value the message quotes.
func (idx *index) typeErrorNode(line int, tag, value, goType string) *entry {
	value = strings.TrimSuffix(value, "...")
	best, bestScore := (*entry)(nil), -1
	for i := range idx.entries {
		e := &idx.entries[i]
		if e.key || e.line != line {
			continue
		}
		score := 0
		if t := fieldTypeAt(e.path); t != nil && t.String() == goType {
			score += 4
		}
		if e.node.ShortTag() == tag {
			score += 2
		}
		if value != "" && strings.HasPrefix(e.node.Value, value) {
			score++
		}
		if score > bestScore {
			best, bestScore = e, score
		}
	}
	return best
}

// truncatedInts reports numbers with a fraction given for integer keys:
// yaml.v3 silently truncates 1.5 to 1.
func (idx *index) truncatedInts() Problems {
	var ps Problems
	for _, e := range idx.entries {
		if e.key || e.node.Kind != yaml.ScalarNode || e.node.ShortTag() != "!!float" {
			continue
		}
		t := fieldTypeAt(e.path)
		if t == nil || t == durationType || reflect.PointerTo(t).Implements(yamlUnmarshaler) {
			continue
		}
		switch t.Kind() {
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			ps = append(ps, Problem{Path: e.path, Where: "line " + strconv.Itoa(e.line), Msg: "want an integer, got " + describeNode(e.node)})
		}
	}
	return ps
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

// wantType describes a Go type the way a config author thinks of it.
func wantType(goType string) string {
	switch {
	case goType == "time.Duration":
		return `a duration such as "10s"`
	case strings.HasPrefix(goType, "[]"):
		return "a list"
	case strings.HasPrefix(goType, "map["), strings.HasPrefix(goType, "config."):
		return "a mapping"
	case strings.HasPrefix(goType, "int"), strings.HasPrefix(goType, "uint"):
		return "an integer"
	case strings.HasPrefix(goType, "float"):
		return "a number"
	case goType == "bool":
		return "true or false"
	case goType == "string":
		return "a string"
	}
	return goType
}

func tagName(tag string) string {
	switch tag {
	case "!!map":
		return "a mapping"
	case "!!seq":
		return "a list"
	case "!!str":
		return "a string"
	case "!!int":
		return "an integer"
	case "!!float":
		return "a number"
	case "!!bool":
		return "a boolean"
	}
	return tag
}

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
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name := yamlName(f)
		if name == "" {
			continue
		}
		fv, fd := v.Field(i), def.Field(i)
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
