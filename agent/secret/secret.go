// Package secret is the agent's string that never prints: the
// configuration's passwords, tokens and API keys, and the forwarders' API
// keys, are Secrets.
package secret

import (
	"fmt"
	"log/slog"
	"strconv"
)

// redacted is what a Secret prints instead of its value.
const redacted = "[redacted]"

// Secret is a string that never prints: String, Format, MarshalText (and so
// JSON and YAML) and LogValue all give "[redacted]" for a non-empty secret and
// "" for an empty one, so logs can still tell "unset" from "set". Reveal
// returns the value; call it only where the secret is sent.
type Secret string

// Reveal returns the secret's value.
func (s Secret) Reveal() string { return string(s) }

// String returns "[redacted]", or "" for an empty secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString keeps %#v from printing the value.
func (s Secret) GoString() string { return strconv.Quote(s.String()) }

// Format makes every fmt verb, %x and %q included, print the redacted form.
func (s Secret) Format(f fmt.State, verb rune) {
	if verb == 'q' {
		fmt.Fprint(f, strconv.Quote(s.String()))
		return
	}
	fmt.Fprint(f, s.String())
}

// MarshalText gives the redacted form, so encoding/json and yaml.v3 never
// write the value.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// LogValue implements slog.LogValuer.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }
