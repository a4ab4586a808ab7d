// Package cli holds the bodies of vigil's subcommands that are not the
// daemon (eval, selftest, simulate, watch): each takes its arguments and
// writers and returns an error, so package main only maps names to them.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// ErrUsage is returned by a command whose flags were wrong; the flag package
// has already printed why.
var ErrUsage = errors.New("usage")

// NewFlags returns a FlagSet for a subcommand that prints to stderr.
func NewFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("vigil "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// SetUsage makes fs's usage print text, then the flags fs defines.
func SetUsage(fs *flag.FlagSet, text string) {
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), text)
		fs.PrintDefaults()
	}
}

// UsageError prints msg and fs's usage, and returns ErrUsage: the answer
// to arguments that parse but do not make a command.
func UsageError(fs *flag.FlagSet, msg string) error {
	fmt.Fprintln(fs.Output(), msg)
	fs.Usage()
	return ErrUsage
}

// ParseFlags parses args, mapping -h and bad flags to ErrUsage.
func ParseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return ErrUsage
	}
	return nil
}
