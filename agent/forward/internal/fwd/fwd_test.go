package fwd

import (
	"net/http"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func TestRetryAfter(t *testing.T) {
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Duration{
		"0": 0, "7": 7 * time.Second, " 120 ": 2 * time.Minute,
		"Sat, 01 Mar 2025 12:00:30 GMT": 30 * time.Second,
		"Sat, 01 Mar 2025 11:00:00 GMT": 0,
	} {
		got, ok := RetryAfter(http.Header{"Retry-After": {in}}, now)
		if !ok || got != want {
			t.Errorf("%q: %v %v, want %v", in, got, ok, want)
		}
	}
	for _, in := range []string{"", "-1", "soon", "1.5"} {
		if _, ok := RetryAfter(http.Header{"Retry-After": {in}}, now); ok {
			t.Errorf("%q accepted", in)
		}
	}
}

func TestTruncateAndClean(t *testing.T) {
	s := strings.Repeat("é", 600) // 1200 bytes
	got := Truncate(s, 1024)
	if len(got) > 1024 || !utf8.ValidString(got) || len(got) != 1024 {
		t.Errorf("Truncate: %d bytes, valid %v", len(got), utf8.ValidString(got))
	}
	if Truncate("abc", 10) != "abc" {
		t.Error("short string changed")
	}
	if got := Clean("Invalid API key: k3y!"+strings.Repeat("x", 400), "k3y!"); strings.Contains(got, "k3y!") || len(got) > 300 {
		t.Errorf("Clean: %q", got)
	}
}
