package cli

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/vigil-edge/vigil/agent/internal/fsx"
	"github.com/vigil-edge/vigil/models"
)

// modelSignCommands are the `vigil model` subcommands of model signing.
// ModelSign is the hook for the `vigil model` dispatcher: it runs
// keygen and sign and reports whether it knew the subcommand.
var modelSignCommands = []struct {
	name, usage string
	run         func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}{
	{"keygen", "write an ed25519 key pair for signing models: --out DIR/NAME writes NAME.key (0600) and NAME.pub", runModelKeygen},
	{"sign", "sign a model: DIR/NAME --key FILE.key writes DIR/NAME.sig over NAME.json (which pins NAME.tflite's sha256)", runModelSign},
}

func ModelSign(ctx context.Context, args []string, stdout, stderr io.Writer) (bool, error) {
	if len(args) == 0 {
		return false, nil
	}
	for _, c := range modelSignCommands {
		if c.name == args[0] {
			return true, c.run(ctx, args[1:], stdout, stderr)
		}
	}
	return false, nil
}

func runModelKeygen(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := NewFlags("model keygen", stderr)
	out := fs.String("out", "", "DIR/NAME: writes DIR/NAME.key (private, mode 0600) and DIR/NAME.pub (required)")
	force := fs.Bool("force", false, "replace existing key files")
	if err := ParseFlags(fs, args); err != nil {
		return err
	}
	if *out == "" || fs.NArg() > 0 {
		return UsageError(fs, "vigil model keygen: give --out DIR/NAME and nothing else")
	}
	pub, priv, err := models.GenerateKey()
	if err != nil {
		return err
	}
	keyPath, pubPath := *out+".key", *out+".pub"
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if *force {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
		return err
	}
	if err := writeKeyFile(keyPath, models.EncodePrivateKey(priv)+"\n", flags, 0o600); err != nil {
		return err
	}
	if err := writeKeyFile(pubPath, models.EncodePublicKey(pub)+"\n", flags, 0o644); err != nil {
		os.Remove(keyPath)
		return err
	}
	fmt.Fprintf(stdout, "wrote %s (private, keep it secret) and %s\npublic key: %s\n", keyPath, pubPath, models.EncodePublicKey(pub))
	return nil
}

func writeKeyFile(path, content string, flags int, perm os.FileMode) error {
	f, err := os.OpenFile(path, flags, perm)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%s exists (use --force to replace it)", path)
	}
	if err != nil {
		return err
	}
	return fsx.WriteSynced(f, []byte(content), perm)
}

func runModelSign(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := NewFlags("model sign", stderr)
	keyFile := fs.String("key", "", "the private key file, NAME.key from vigil model keygen (required)")
	// The model may come before the flags: vigil model sign DIR/NAME --key K.
	var model string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		model, args = args[0], args[1:]
	}
	if err := ParseFlags(fs, args); err != nil {
		return err
	}
	if model == "" && fs.NArg() == 1 {
		model = fs.Arg(0)
	} else if fs.NArg() > 0 {
		model = ""
	}
	if model == "" || *keyFile == "" {
		return UsageError(fs, "vigil model sign: give one model DIR/NAME and --key FILE.key")
	}
	fi, err := os.Stat(*keyFile)
	if err != nil {
		return err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		fmt.Fprintf(stderr, "warning: %s is readable by others (mode %v)\n", *keyFile, fi.Mode().Perm())
	}
	b, err := os.ReadFile(*keyFile)
	if err != nil {
		return err
	}
	key, err := models.ParsePrivateKey(string(b))
	if err != nil {
		return fmt.Errorf("%s: %w", *keyFile, err)
	}
	out, err := models.SignFiles(model, key)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s (key %s)\n", out, models.EncodePublicKey(key.Public().(ed25519.PublicKey)))
	return nil
}
