package main

import (
	"context"
	"io"

	"github.com/vigil-edge/vigil/agent/modeltool"
)

// runScore is `vigil score` (see agent/modeltool).
func runScore(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return toolErr(modeltool.Score(ctx, args, stdout, stderr))
}
