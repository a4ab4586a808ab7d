package source

import "fmt"

// OptionError is a problem with one field of a source's options. The config
// layer can map Field (e.g. "Schedule[2].Intensity") back to its key path.
type OptionError struct {
	Field   string
	Problem string
}

func (e *OptionError) Error() string { return e.Field + ": " + e.Problem }

// optErr returns an *OptionError for field.
func optErr(field, format string, args ...any) error {
	return &OptionError{Field: field, Problem: fmt.Sprintf(format, args...)}
}
