package config

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"
)

// EnvPrefix starts the name of every configuration environment variable.
const EnvPrefix = "VIGIL_"

// Key describes one configuration key. Keys inside list items have paths such
// as "sources[].mqtt.topics" and no environment variable.
type Key struct {
	// Path is the dotted key path, e.g. "mqtt.tls.ca_file".
	Path string
	// Env is the environment variable that sets the key, or "" for keys
	// that only the file can set.
	Env string
	// Type names the value's type: string, integer, number, boolean,
	// duration, size, secret, switch, rate, list or map.
	Type string
	// Default is the default value as it would be written in the file.
	Default string
	// Doc says what the key means.
	Doc string
	// Secret reports whether the value is a secret.
	Secret bool
	// IsPath reports whether the value is a file system path, resolved
	// against the config file's directory when relative.
	IsPath bool
}

// EnvName returns the environment variable for a key path: VIGIL_ + the path
// upper-cased with "." replaced by "_".
func EnvName(path string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(path, ".", "_"))
}

// Keys lists every configuration key in file order.
func Keys() []Key {
	var ks []Key
	walkKeys(reflect.ValueOf(Default()).Elem(), "", false, &ks)
	return ks
}

func walkKeys(v reflect.Value, prefix string, inList bool, ks *[]Key) {
	for f, name := range keyFields(v.Type()) {
		path := joinPath(prefix, name)
		fv := v.Field(f.Index[0])
		ft := f.Type
		switch {
		case ft.Kind() == reflect.Struct && !isLeaf(ft):
			walkKeys(fv, path, inList, ks)
			continue
		case ft.Kind() == reflect.Pointer && ft.Elem().Kind() == reflect.Struct:
			ev := reflect.New(ft.Elem()).Elem()
			if !fv.IsNil() {
				ev = fv.Elem()
			}
			walkKeys(ev, path, inList, ks)
			continue
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			*ks = append(*ks, Key{Path: path, Type: "list", Doc: f.Tag.Get("doc")})
			walkKeys(elemDefault(ft.Elem()), path+"[]", true, ks)
			continue
		}
		k := Key{
			Path:    path,
			Type:    typeName(ft),
			Default: format(fv),
			Doc:     f.Tag.Get("doc"),
			Secret:  ft == reflect.TypeFor[Secret](),
			IsPath:  f.Tag.Get("conf") == "path",
		}
		if !inList && ft.Kind() != reflect.Map {
			k.Env = EnvName(path)
		}
		*ks = append(*ks, k)
	}
}

func typeName(t reflect.Type) string {
	switch t {
	case durationType:
		return "duration"
	case reflect.TypeFor[ByteSize]():
		return "size"
	case reflect.TypeFor[Secret]():
		return "secret"
	case reflect.TypeFor[Switch]():
		return "switch"
	case reflect.TypeFor[Rate]():
		return "rate"
	}
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Int, reflect.Int64:
		return "integer"
	case reflect.Float64:
		return "number"
	case reflect.Bool:
		return "boolean"
	case reflect.Slice:
		return "list"
	case reflect.Map:
		return "map"
	}
	return t.String()
}

// format writes a value as it would be written in the environment.
func format(v reflect.Value) string {
	switch v.Type() {
	case durationType:
		return formatDuration(time.Duration(v.Int()))
	case reflect.TypeFor[Secret](), reflect.TypeFor[ByteSize](), reflect.TypeFor[Switch](), reflect.TypeFor[Rate]():
		return fmt.Sprint(v.Interface())
	}
	switch v.Kind() {
	case reflect.String:
		return v.String()
	case reflect.Int, reflect.Int64:
		return strconv.FormatInt(v.Int(), 10)
	case reflect.Float64:
		return strconv.FormatFloat(v.Float(), 'g', -1, 64)
	case reflect.Bool:
		return strconv.FormatBool(v.Bool())
	case reflect.Slice:
		parts := make([]string, v.Len())
		for i := range parts {
			parts[i] = format(v.Index(i))
		}
		return strings.Join(parts, ",")
	case reflect.Map:
		m := v.Interface().(map[string]string)
		parts := make([]string, 0, len(m))
		for _, k := range sortedKeys(m) {
			parts = append(parts, k+": "+strconv.Quote(m[k]))
		}
		return "{" + strings.Join(parts, ", ") + "}"
	}
	return fmt.Sprint(v.Interface())
}

// leaf finds the settable scalar field at a key path.
func (c *Config) leaf(path string) (reflect.Value, error) {
	v := reflect.ValueOf(c).Elem()
	segs := strings.Split(path, ".")
	for i, seg := range segs {
		if name, _, list := strings.Cut(seg, "["); list {
			return reflect.Value{}, fmt.Errorf("%q can only be set in the config file", strings.Join(append(segs[:i:i], name), "."))
		}
		f, ok := fieldByKey(v.Type(), seg)
		if !ok {
			return reflect.Value{}, fmt.Errorf("unknown key %q%s", path, suggest(path))
		}
		v = v.FieldByIndex(f.Index)
		last := i == len(segs)-1
		switch {
		case f.Type.Kind() == reflect.Struct && !isLeaf(f.Type):
			if last {
				return reflect.Value{}, fmt.Errorf("%q is a block, not a key: set its keys, e.g. %s.%s", path, path, yamlName(f.Type.Field(0)))
			}
		case f.Type.Kind() == reflect.Map || f.Type.Kind() == reflect.Pointer ||
			(f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() != reflect.String):
			return reflect.Value{}, fmt.Errorf("%q can only be set in the config file", strings.Join(segs[:i+1], "."))
		default:
			if !last {
				return reflect.Value{}, fmt.Errorf("unknown key %q", path)
			}
			return v, nil
		}
	}
	return reflect.Value{}, fmt.Errorf("unknown key %q", path)
}

// Set sets the scalar key at path (e.g. "mqtt.broker") from its text form,
// parsed as in the environment: durations like 10s, sizes like 256MiB,
// booleans as strconv.ParseBool reads them, lists comma-separated. Keys in the
// sources and streams lists and string maps cannot be set this way. Flags use
// Set; it does not validate beyond the value's type.
func (c *Config) Set(path, value string) error {
	if err := c.set(path, value, ""); err != nil {
		return fmt.Errorf("set %s: %w", path, err)
	}
	return nil
}

// Apply sets several keys as Set does, in key order, and reports every
// failure as an *Error.
func (c *Config) Apply(overrides map[string]string) error {
	var ps Problems
	for _, k := range sortedKeys(overrides) {
		if err := c.set(k, overrides[k], ""); err != nil {
			ps = append(ps, Problem{Path: k, Msg: err.Error()})
		}
	}
	if len(ps) > 0 {
		return &Error{Problems: ps}
	}
	return nil
}

// Get returns the value at a key path in its text form; secrets are redacted.
func (c *Config) Get(path string) (string, error) {
	v, err := c.leaf(path)
	if err != nil {
		return "", err
	}
	return format(v), nil
}

func (c *Config) set(path, value, origin string) error {
	v, err := c.leaf(path)
	if err != nil {
		return err
	}
	if err := setText(v, value); err != nil {
		return err
	}
	if c.where == nil {
		c.where = map[string]string{}
	}
	if origin == "" {
		delete(c.where, path)
	} else {
		c.where[path] = origin
	}
	return nil
}

// textParsers parse the config's own scalar types from text.
var textParsers = map[reflect.Type]func(string) (any, error){
	durationType:                func(s string) (any, error) { return parseDuration(s) },
	reflect.TypeFor[ByteSize](): func(s string) (any, error) { return ParseByteSize(s) },
	reflect.TypeFor[Switch]():   func(s string) (any, error) { return ParseSwitch(s) },
	reflect.TypeFor[Rate]():     func(s string) (any, error) { return ParseRate(s) },
}

// setText parses s into the scalar v.
func setText(v reflect.Value, s string) error {
	if parse, ok := textParsers[v.Type()]; ok {
		x, err := parse(s)
		if err != nil {
			return err
		}
		v.Set(reflect.ValueOf(x))
		return nil
	}
	switch v.Kind() {
	case reflect.String:
		v.SetString(s)
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, v.Type().Bits())
		if err != nil {
			return fmt.Errorf("invalid integer %q", s)
		}
		v.SetInt(n)
	case reflect.Float64:
		f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Errorf("invalid number %q", s)
		}
		v.SetFloat(f)
	case reflect.Bool:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("invalid boolean %q: want true or false", s)
		}
		v.SetBool(b)
	case reflect.Slice:
		var items []string
		for _, p := range strings.Split(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				items = append(items, p)
			}
		}
		v.Set(reflect.ValueOf(items))
	default:
		return errors.New("not settable from text")
	}
	return nil
}

// applyEnv sets every key whose variable env has, non-empty.
func (c *Config) applyEnv(env func(string) (string, bool)) Problems {
	var ps Problems
	for _, k := range Keys() {
		if k.Env == "" {
			continue
		}
		val, ok := env(k.Env)
		if !ok || val == "" {
			continue
		}
		if err := c.set(k.Path, val, "from "+k.Env); err != nil {
			ps = append(ps, Problem{Path: k.Path, Where: "from " + k.Env, Msg: err.Error()})
		}
	}
	return ps
}

// UnknownEnv returns the VIGIL_* variables in environ ("NAME=value" pairs, as
// os.Environ gives) that set no key, sorted: most likely misspelt.
func UnknownEnv(environ []string) []string {
	known := map[string]bool{}
	for _, k := range Keys() {
		if k.Env != "" {
			known[k.Env] = true
		}
	}
	var out []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(name, EnvPrefix) && !known[name] {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// Reference returns the configuration reference as Markdown: how the layers
// and the environment work, then a table of every key with its environment
// variable, type, default and meaning.
func Reference() string {
	var b strings.Builder
	b.WriteString(`# Configuration reference

Vigil reads one YAML file (` + "`vigil run --config FILE`" + `). Every key has a default
except ` + "`device_id`" + `; the file overrides the defaults, environment variables override
the file, and flags override the environment. The file is decoded strictly: an
unknown key, a duplicate key or a value of the wrong type is an error.
` + "`vigil check-config FILE`" + ` prints every problem with its key path and line.

Environment variables: ` + "`VIGIL_`" + ` + the key path in upper case with ` + "`.`" + ` replaced by ` + "`_`" + `
(` + "`mqtt.broker`" + ` → ` + "`VIGIL_MQTT_BROKER`" + `). Every scalar key has one; lists of strings take
comma-separated values; an empty variable is ignored. The ` + "`sources`" + ` and
` + "`streams`" + ` lists and string maps can only be set in the file.

Types: durations are Go durations (` + "`500ms`, `10s`, `1m30s`" + `); sizes are bytes or a
number with a unit (` + "`256MiB`, `1GB`" + `); a switch is ` + "`auto`, `true` or `false`" + `;
a rate is ` + "`N/s`, `N/min`, `N/h`" + ` or ` + "`0`" + ` for unlimited. Secrets are never printed; each
has a ` + "`*_file`" + ` key that reads it from a file instead. Relative paths in the file are
relative to the file's directory.

| key | environment | type | default | meaning |
|---|---|---|---|---|
`)
	esc := strings.NewReplacer("|", `\|`, "\n", " ")
	for _, k := range Keys() {
		env := k.Env
		if env == "" {
			env = "—"
		} else {
			env = "`" + env + "`"
		}
		def := k.Default
		if def != "" {
			def = "`" + esc.Replace(def) + "`"
		}
		fmt.Fprintf(&b, "| `%s` | %s | %s | %s | %s |\n", k.Path, env, k.Type, def, esc.Replace(k.Doc))
	}
	return b.String()
}
