package testkit

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// Chromium returns the Chromium the browser tests run: $CHROMIUM, else
// chromium on the PATH. It skips the test when there is none (make setup
// installs it) or under -short.
func Chromium(tb testing.TB) string {
	tb.Helper()
	if testing.Short() {
		tb.Skip("starts Chromium: not in -short")
	}
	c := os.Getenv("CHROMIUM")
	if c == "" {
		c = "chromium"
	}
	if _, err := exec.LookPath(c); err != nil {
		tb.Skip("chromium is not installed (make setup installs it)")
	}
	return c
}

// Headless loads url in a headless Chromium (Chromium(tb)) with a fresh
// profile, no background traffic and 3 s of virtual time for the page's
// scripts, plus the flags in extra (--dump-dom, --screenshot=…), for at
// most 90 s. It fails the test when Chromium fails or a script on the
// page throws, and returns what Chromium wrote on stdout (the DOM, with
// --dump-dom).
func Headless(tb testing.TB, url string, extra ...string) string {
	tb.Helper()
	chromium := Chromium(tb)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	args := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--disable-quic", "--no-first-run", "--hide-scrollbars",
		"--user-data-dir=" + tb.TempDir(), "--virtual-time-budget=3000", "--enable-logging=stderr", "--v=0"}
	cmd := exec.CommandContext(ctx, chromium, append(append(args, extra...), url)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		tb.Fatalf("chromium %v: %v\n%s", extra, err, stderr.String())
	}
	if strings.Contains(stderr.String(), "Uncaught") {
		tb.Fatalf("the page's script failed:\n%s", stderr.String())
	}
	return stdout.String()
}
