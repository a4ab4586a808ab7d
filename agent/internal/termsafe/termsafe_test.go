package termsafe

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestString(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{"user-12345", "user-12345"},
		{"zoë 日本", "zoë 日本"},
		{"eve\n12:00:00 ALERT CRITICAL forged", `eve\n12:00:00 ALERT CRITICAL forged`},
		{"\x1b[2J\x1b]0;pwned\x07", `\x1b[2J\x1b]0;pwned\x07`},
		{"a\rb\tc\x7f", `a\rb\tc\x7f`},
		{"C1 \u009b31m", `C1 \u009b31m`},
		{"bidi \u202egnp.exe", `bidi \u202egnp.exe`},
		{"bad \xff utf-8", `bad \xff utf-8`},
		{`forged \n escape`, `forged \\n escape`},
	} {
		if got := String(tt.in); got != tt.want {
			t.Errorf("String(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// FuzzString: the result is valid UTF-8 without a control character, and
// distinct inputs stay distinct (the escaping is reversible).
func FuzzString(f *testing.F) {
	for _, s := range []string{"", "user-1", "a\nb", "\x1b[31m", "\u202e", "\xff\xfe", `\x1b`, "\\"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got := String(s)
		if !utf8.ValidString(got) {
			t.Fatalf("String(%q) = %q: invalid UTF-8", s, got)
		}
		for _, r := range got {
			if unicode.IsControl(r) || unsafe(r) {
				t.Fatalf("String(%q) = %q: has %U", s, got, r)
			}
		}
		if got2 := String(s + "\n"); got2 == got {
			t.Fatalf("String(%q) and String(%q) are both %q", s, s+"\n", got)
		}
	})
}

// The slog text handler, which the daemon logs with, quotes a value with a
// control character, so a hostile id cannot forge a log line either.
func TestSlogTextHandlerQuotes(t *testing.T) {
	var b bytes.Buffer
	slog.New(slog.NewTextHandler(&b, nil)).Warn("dropped a bad event", "user_id", "eve\nlevel=ERROR msg=forged \x1b[31m")
	if n := strings.Count(b.String(), "\n"); n != 1 || strings.Contains(b.String(), "\x1b") {
		t.Fatalf("slog text line: %q", b.String())
	}
}
