package main

import (
	"context"
	"errors"
	"io"

	"github.com/vigil-edge/vigil/agent/cli"
	"github.com/vigil-edge/vigil/agent/modeltool"
)

// runModel is `vigil model inspect|init|calibrate` (see agent/modeltool)
// and `vigil model keygen|sign` (model signing, agent/cli).
func runModel(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if ok, err := cli.ModelSign(ctx, args, stdout, stderr); ok {
		return err
	}
	return toolErr(modeltool.Model(ctx, args, stdout, stderr))
}

// toolErr maps modeltool's usage error to the exit status 2 one.
func toolErr(err error) error {
	if errors.Is(err, modeltool.ErrUsage) {
		return errUsage
	}
	return err
}
