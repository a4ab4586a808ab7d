package dify

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"text/template"
	"time"
)

// TemplateData is what a dify.inputs template sees: {{.ID}}, {{.Score}},
// {{join .TopFeatures ", "}}. The forwarder fills it from the alert.
type TemplateData struct {
	ID           string    // alert id, stable across replays
	Seq          uint64    // sequence number in the alert lane
	Device       string    // device_id
	Stream       string    // stream name
	Kind         string    // sensor or behaviour
	Key          string    // behaviour streams: the key's value (e.g. the user id)
	Time         time.Time // end of the window that raised the alert
	WindowStart  time.Time
	WindowEnd    time.Time
	Score        float64
	Threshold    float64
	Severity     string // warning, major or critical
	Episode      string // episode id; updates of one episode share it
	Model        string
	ModelVersion string
	TopFeatures  []string // the most contributing channels or features, highest first
	Replayed     bool
}

// TemplateFuncs are the functions dify.inputs templates may call besides
// text/template's own: join (strings.Join) and json (JSON encoding).
func TemplateFuncs() template.FuncMap {
	return template.FuncMap{
		"join": strings.Join,
		"json": func(v any) (string, error) {
			b, err := json.Marshal(v)
			return string(b), err
		},
	}
}

// ParseInput parses one input template with TemplateFuncs; a missing
// field is an error at execution.
func ParseInput(name, text string) (*template.Template, error) {
	return template.New(name).Funcs(TemplateFuncs()).Option("missingkey=error").Parse(text)
}

// ParseInputs parses the input templates, naming each by its key path
// dify.inputs.<name> in errors.
func ParseInputs(inputs map[string]string) (map[string]*template.Template, error) {
	out := make(map[string]*template.Template, len(inputs))
	for _, k := range slices.Sorted(maps.Keys(inputs)) {
		t, err := ParseInput(k, inputs[k])
		if err != nil {
			return nil, fmt.Errorf("dify.inputs.%s: %w", k, err)
		}
		out[k] = t
	}
	return out, nil
}

// DefaultInputs are the workflow inputs sent by default: alert_id and a
// one-line summary of the alert.
func DefaultInputs() map[string]string {
	return map[string]string{
		"alert_id": "{{.ID}}",
		"summary":  `{{.Severity}} anomaly on {{.Device}}/{{.Stream}}{{if .Key}} ({{.Key}}){{end}} at {{.Time.Format "2006-01-02T15:04:05Z07:00"}}: score {{printf "%.3g" .Score}}, threshold {{printf "%.3g" .Threshold}}; top features: {{join .TopFeatures ", "}}`,
	}
}
