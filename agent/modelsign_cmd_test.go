package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-edge/vigil/models"
)

// TestModelKeygenAndSign (issue 18 item 1): keygen writes NAME.key (0600)
// and NAME.pub (one base64 line); sign writes NAME.sig beside the model,
// which verifies against the .pub and not against another key.
func TestModelKeygenAndSign(t *testing.T) {
	dir := t.TempDir()
	run := func(args ...string) (string, int) {
		var out, errb bytes.Buffer
		code := dispatch(context.Background(), args, &out, &errb)
		return out.String() + errb.String(), code
	}
	keys := filepath.Join(dir, "keys", "fleet")
	if out, code := run("model", "keygen", "--out", keys); code != 0 {
		t.Fatalf("keygen: %d %s", code, out)
	}
	fi, err := os.Stat(keys + ".key")
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("NAME.key: %v, mode %v", err, fi.Mode().Perm())
	}
	pubLine, _ := os.ReadFile(keys + ".pub")
	if strings.Count(string(pubLine), "\n") != 1 {
		t.Fatalf("NAME.pub is not one line: %q", pubLine)
	}
	pub, err := models.ParsePublicKey(string(pubLine))
	if err != nil {
		t.Fatal(err)
	}
	if out, code := run("model", "keygen", "--out", keys); code != 1 || !strings.Contains(out, "exists") {
		t.Fatalf("keygen over existing keys: %d %s", code, out)
	}

	model := filepath.Join(dir, "pump8")
	for _, ext := range []string{".json", ".tflite"} {
		b, _ := os.ReadFile(filepath.Join("..", "models", "pump8"+ext))
		os.WriteFile(model+ext, b, 0o644)
	}
	if out, code := run("model", "sign", model, "--key", keys+".key"); code != 0 {
		t.Fatalf("sign: %d %s", code, out)
	}
	if _, err := models.VerifyFiles(model, models.Trust{Keys: []ed25519.PublicKey{pub}}); err != nil {
		t.Fatalf("the signed model does not verify: %v", err)
	}
	other, _, _ := models.GenerateKey()
	if _, err := models.VerifyFiles(model, models.Trust{Keys: []ed25519.PublicKey{other}}); !errors.Is(err, models.ErrUnknownKey) {
		t.Fatalf("against another key: %v", err)
	}
	if _, code := run("model", "sign", model); code != 2 {
		t.Fatalf("sign without --key: exit %d, want 2", code)
	}
	if out, code := run("model", "sign", filepath.Join(dir, "nope"), "--key", keys+".key"); code != 1 || !strings.Contains(out, "nope") {
		t.Fatalf("sign a missing model: %d %s", code, out)
	}
}
