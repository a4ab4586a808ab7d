// Package cli holds the bodies of vigil's subcommands that are not the
// daemon (eval, selftest, simulate, watch): each takes its arguments and
// writers and returns an error, so package main only maps names to them.
package cli

import (
	"errors"
	"flag"
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

// ParseFlags parses args, mapping -h and bad flags to ErrUsage.
func ParseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return ErrUsage
	}
	return nil
}
