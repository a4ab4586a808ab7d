package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

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
		if t := fieldTypeAt(found.path); t != nil && t.String() == m[4] {
			want = wantKind(t, want)
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
// wantKind describes a field's type by its kind, so that a named type such
// as config.Secret (a string) is not taken for a block; what wantType found
// by the name otherwise.
func wantKind(t reflect.Type, byName string) string {
	if t == durationType {
		return byName
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Slice:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a mapping"
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "true or false"
	}
	return byName
}

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
