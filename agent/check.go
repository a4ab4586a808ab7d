package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"

	"github.com/vigil-edge/vigil/agent/cli"
	"github.com/vigil-edge/vigil/agent/config"
	"github.com/vigil-edge/vigil/agent/daemon"
	"github.com/vigil-edge/vigil/buffer"
)

// runCheckConfig loads a config file the way `vigil run` would (defaults,
// file, VIGIL_* environment), loads every model it names, and prints every
// problem with its key path. It fails when there is any error; warnings alone
// pass.
func runCheckConfig(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("check-config", stderr)
	cli.SetUsage(fs, "usage: vigil check-config FILE\n\nReports every problem of FILE (and of the VIGIL_* environment) with its key path.")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errUsage
	}
	path := fs.Arg(0)
	errs, warns := config.Check(path)
	if len(errs) == 0 {
		// The file is sound: check that its models load and fit their streams.
		if cfg, err := config.Load(path, envLookup); err == nil {
			warns = append(warns, checkBufferDisk(cfg)...)
			errs = append(errs, daemon.Check(cfg)...)
		}
	}
	for _, w := range warns {
		fmt.Fprintf(stdout, "warning: %s\n", w)
	}
	for _, e := range errs {
		fmt.Fprintf(stdout, "error: %s\n", e)
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s: %d error(s), %d warning(s)", path, len(errs), len(warns))
	}
	fmt.Fprintf(stdout, "%s: ok (%d warning(s))\n", path, len(warns))
	return nil
}

// checkBufferDisk warns when buffer.max_bytes exceeds what the filesystem
// of data_dir can hold (the buffer warns at start-up too).
func checkBufferDisk(cfg *config.Config) config.Problems {
	if cfg.Buffer.Kind == "memory" {
		return nil
	}
	bo := buffer.DefaultBadgerOptions(filepath.Join(cfg.DataDir, "buffer"))
	bo.MaxBytes = int64(cfg.Buffer.MaxBytes)
	bo.MaxRecordBytes = int(cfg.Buffer.MaxRecordBytes)
	bo.MemoryBudget = int64(cfg.Buffer.MemoryBudget)
	if w := buffer.CheckDisk(bo); w != "" {
		return config.Problems{{Path: "buffer.max_bytes", Msg: w, Warning: true}}
	}
	return nil
}
