package daemon

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/vigil-edge/vigil/agent/config"
)

// restartSettings are the config keys (a section stands for every key in
// it) read by the parts that live as long as the process: the buffer, the
// HTTP listener, the MQTT publisher and embedded broker, the forwarders,
// health publishing and package main's logger. A reload that changes any of
// them applies nothing; the rest (models_dir, inference, http's event
// settings, sources, streams) belong to the generation a reload replaces.
var restartSettings = []string{"device_id", "data_dir", "log", "http.listen", "buffer", "mqtt", "health", "amplitude", "dify"}

// RestartError is a reload's answer when the new config changes settings
// that only a restart applies.
type RestartError struct {
	Keys []string // key paths that changed, e.g. "device_id", "mqtt.prefix"
}

func (e *RestartError) Error() string {
	return fmt.Sprintf("nothing reloaded: %s changed, which only a restart applies (the running config is unchanged)", strings.Join(e.Keys, ", "))
}

// restartOnly lists the key paths under restartSettings whose values differ
// between old and cur.
func restartOnly(old, cur *config.Config) []string {
	var keys []string
	for _, k := range restartSettings {
		a, b := field(reflect.ValueOf(old).Elem(), k), field(reflect.ValueOf(cur).Elem(), k)
		keys = append(keys, diff(k, a, b)...)
	}
	return keys
}

// field returns the value at a dotted yaml key path of a struct.
func field(v reflect.Value, path string) reflect.Value {
	for name := range strings.SplitSeq(path, ".") {
		t := v.Type()
		found := false
		for i := range t.NumField() {
			if tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); tag == name {
				v, found = v.Field(i), true
				break
			}
		}
		if !found {
			panic("daemon: no config key " + path) // a typo in restartSettings
		}
	}
	return v
}

// diff lists the key paths under prefix where a and b differ: the leaves of
// a struct with yaml keys, else prefix itself. Secrets are compared too.
func diff(prefix string, a, b reflect.Value) []string {
	if a.Kind() == reflect.Struct {
		var out []string
		t := a.Type()
		for i := range t.NumField() {
			tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
			if tag == "" || tag == "-" || !t.Field(i).IsExported() {
				continue
			}
			out = append(out, diff(prefix+"."+tag, a.Field(i), b.Field(i))...)
		}
		if len(out) > 0 || hasYAMLFields(t) {
			return out
		}
	}
	if !reflect.DeepEqual(a.Interface(), b.Interface()) {
		return []string{prefix}
	}
	return nil
}

func hasYAMLFields(t reflect.Type) bool {
	for i := range t.NumField() {
		if tag := t.Field(i).Tag.Get("yaml"); tag != "" && tag != "-" && t.Field(i).IsExported() {
			return true
		}
	}
	return false
}
