// Package termsafe escapes text from the outside world (user ids, keys,
// stream names, device ids, broker messages) before it reaches a terminal
// or a line-oriented log: a newline would forge a line, an escape sequence
// would move the cursor, recolour or retitle the terminal, and a bidi
// override would make the text read differently from what it is.
package termsafe

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// unsafe reports whether r must be escaped: C0 and C1 control characters
// (newline, tab and escape included), DEL, the bidirectional overrides and
// isolates, the line and paragraph separators, and the replacement character
// that invalid UTF-8 decodes to.
func unsafe(r rune) bool {
	switch {
	case r < 0x20, r == 0x7f, r >= 0x80 && r <= 0x9f:
		return true
	case r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069, r == 0x2028, r == 0x2029, r == 0x200e, r == 0x200f:
		return true
	}
	return false
}

// String returns s with every unsafe character and every byte of invalid
// UTF-8 written as a Go escape (\n, \t, \x1b, \u202e), and backslashes
// doubled so that an escape cannot be forged; s itself when it has none.
func String(s string) string {
	clean := true
	for i, r := range s {
		if r == '\\' || unsafe(r) || r == utf8.RuneError && isInvalid(s[i:]) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && n <= 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x80 && unsafe(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case unsafe(r):
			fmt.Fprintf(&b, `\u%04x`, r)
		default:
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}

func isInvalid(s string) bool {
	_, n := utf8.DecodeRuneInString(s)
	return n <= 1
}
