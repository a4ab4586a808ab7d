package config

import (
	"fmt"
	"os"
	"strings"
)

// Problem is one thing wrong with a configuration.
type Problem struct {
	// Path is the key path, e.g. "streams[1].model"; "" for the file as a
	// whole.
	Path string
	// Where says where the value came from, when known: "line 12" or
	// "from VIGIL_MQTT_BROKER".
	Where string
	// Msg says what is wrong.
	Msg string
	// Warning marks a problem that does not stop Vigil from running.
	Warning bool
}

// String formats the problem as "path: message (where)".
func (p Problem) String() string {
	var b strings.Builder
	if p.Path != "" {
		b.WriteString(p.Path)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	if p.Where != "" {
		b.WriteString(" (")
		b.WriteString(p.Where)
		b.WriteString(")")
	}
	return b.String()
}

// Problems is a list of problems in the order they were found.
type Problems []Problem

// String puts one problem on each line, warnings prefixed with "warning: ".
func (ps Problems) String() string {
	var b strings.Builder
	for _, p := range ps {
		if p.Warning {
			b.WriteString("warning: ")
		}
		b.WriteString(p.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// Err returns the problems as an *Error, or nil when there are none.
func (ps Problems) Err() error {
	if len(ps) == 0 {
		return nil
	}
	return &Error{Problems: ps}
}

// Error is a configuration that cannot be used, with every problem found.
type Error struct {
	// File is the config file, if there is one.
	File     string
	Problems Problems
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("config")
	if e.File != "" {
		b.WriteString(" ")
		b.WriteString(e.File)
	}
	if len(e.Problems) == 1 {
		b.WriteString(": ")
		b.WriteString(e.Problems[0].String())
		return b.String()
	}
	fmt.Fprintf(&b, ": %d problems:", len(e.Problems))
	for _, p := range e.Problems {
		b.WriteString("\n\t")
		b.WriteString(p.String())
	}
	return b.String()
}

// Check loads the file at path with the process environment, validates it
// and returns every error and every warning, as `vigil check-config FILE`
// prints them. VIGIL_* variables that set no key are warned about. A file
// that cannot be read is a single error.
func Check(path string) (errs, warns Problems) {
	return check(path, os.LookupEnv, os.Environ())
}

func check(path string, env func(string) (string, bool), environ []string) (errs, warns Problems) {
	c, decodeErrs, err := load(path, env)
	if err != nil {
		return Problems{{Msg: err.Error()}}, nil
	}
	for _, p := range decodeErrs {
		if p.Path == "" {
			// The file could not be parsed: validating the defaults
			// would only add noise.
			return decodeErrs, nil
		}
	}
	errs, warns = c.Validate()
	errs = append(decodeErrs, dropCascades(errs, decodeErrs)...)
	warns = dropCascades(warns, decodeErrs)
	for _, name := range UnknownEnv(environ) {
		warns = append(warns, Problem{Msg: fmt.Sprintf("environment variable %s sets no config key", name), Warning: true})
	}
	return errs, warns
}

// dropCascades removes the validation problems of keys that could not be
// decoded: "want an integer" already says what is wrong with them.
func dropCascades(ps, decodeErrs Problems) Problems {
	out := ps[:0:0]
next:
	for _, p := range ps {
		for _, d := range decodeErrs {
			if d.Path != "" && (p.Path == d.Path || strings.HasPrefix(p.Path, d.Path+".") || strings.HasPrefix(p.Path, d.Path+"[")) {
				continue next
			}
		}
		out = append(out, p)
	}
	return out
}
