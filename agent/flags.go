package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"runtime"

	"github.com/vigil-edge/vigil/agent/cli"
	"github.com/vigil-edge/vigil/inference"
)

// errUsage is returned by a command whose flags were wrong; the flag package
// has already printed why.
var errUsage = cli.ErrUsage

// newFlags returns a FlagSet for a subcommand that prints to stderr.
func newFlags(name string, stderr io.Writer) *flag.FlagSet { return cli.NewFlags(name, stderr) }

// parseFlags parses args, mapping -h and bad flags to errUsage.
func parseFlags(fs *flag.FlagSet, args []string) error { return cli.ParseFlags(fs, args) }

func runVersion(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("version", stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "vigil %s (%s, %s/%s), TensorFlow Lite %s\n",
		version, runtime.Version(), runtime.GOOS, runtime.GOARCH, inference.Version())
	return nil
}
