// Package modeltool holds the commands that bring a model made elsewhere
// to Vigil: vigil model inspect, init and calibrate describe a .tflite
// file, write its manifest and set its threshold from normal data, and
// vigil score scores a recorded file with a model exactly as the agent
// would. Package main only registers them.
package modeltool

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// ErrUsage is returned for a usage error (exit status 2); the usage has
// been printed.
var ErrUsage = errors.New("usage")

// Model runs `vigil model SUBCOMMAND ...`.
func Model(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sub := ""
	if len(args) > 0 {
		sub = args[0]
	}
	switch sub {
	case "inspect":
		return runInspect(args[1:], stdout, stderr)
	case "init":
		return runInit(args[1:], stdout, stderr)
	case "calibrate":
		return runCalibrate(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		modelUsage(stderr)
		return nil
	}
	modelUsage(stderr)
	return ErrUsage
}

func modelUsage(w io.Writer) {
	fmt.Fprint(w, `usage: vigil model <subcommand> [flags]

subcommands:
  inspect FILE.tflite [--json]       tensors, operators (and whether this runtime has them), size
  init FILE.tflite --window N --hop H --channels a,b,... --out DIR
                                     write DIR/NAME.tflite and DIR/NAME.json for a model made elsewhere
  calibrate DIR/NAME --data normal.csv
                                     set the threshold from the scores of normal data
  keygen --out DIR/NAME              an ed25519 key pair for signing models (NAME.key, NAME.pub)
  sign DIR/NAME --key FILE.key       sign a model for deploy-model (writes DIR/NAME.sig)

Run 'vigil model <subcommand> -h' for its flags.
`)
}

// parse parses flags and positional arguments in any order, and checks
// the number of positional arguments.
func parse(fs *flag.FlagSet, args []string, positional int, what string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, ErrUsage
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	if len(pos) != positional {
		fmt.Fprintf(fs.Output(), "%s: want %s, got %d argument(s)\n", fs.Name(), what, len(pos))
		fs.Usage()
		return nil, ErrUsage
	}
	return pos, nil
}

func newFlags(name string, stderr io.Writer, usage string) *flag.FlagSet {
	fs := flag.NewFlagSet("vigil "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: vigil %s %s\n\nflags:\n", name, usage)
		fs.PrintDefaults()
	}
	return fs
}

// usageErr prints msg and the usage and returns ErrUsage.
func usageErr(fs *flag.FlagSet, format string, args ...any) error {
	fmt.Fprintf(fs.Output(), "%s: %s\n", fs.Name(), fmt.Sprintf(format, args...))
	fs.Usage()
	return ErrUsage
}

func splitList(s string) []string {
	if strings.TrimSpace(s) == "" {
		return nil
	}
	var out []string
	for _, f := range strings.Split(s, ",") {
		out = append(out, strings.TrimSpace(f))
	}
	return out
}
