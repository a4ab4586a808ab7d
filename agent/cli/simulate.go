package cli

import (
	"context"
	"io"
	"os"
	"time"

	"github.com/vigil-edge/vigil/agent/source"
)

// Simulate is `vigil simulate`: it writes simulated data to a file: pump
// samples as SKAB-format CSV (`vigil simulate pump`) or kiosk behaviour
// events as JSONL (`vigil simulate kiosk`). The same seed gives the same
// bytes; make models trains the default models on it.
func Simulate(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := NewFlags("simulate", stderr)
	SetUsage(fs, "usage: vigil simulate pump|kiosk [flags]")
	if len(args) == 0 {
		fs.Usage()
		return ErrUsage
	}
	kind := args[0]
	n := fs.Int("n", 20000, "samples (pump) or events (kiosk) to write")
	seed := fs.Uint64("seed", 1, "random seed")
	out := fs.String("out", "", "output file (default stdout)")
	faults := fs.Bool("faults", false, "inject faults (pump) or struggling users (kiosk), labelled in the anomaly column/field")
	users := fs.Int("users", 20, "kiosk users")
	if err := ParseFlags(fs, args[1:]); err != nil {
		return err
	}
	w := stdout
	if *out != "" {
		f, err := os.Create(*out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	start := time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)
	switch kind {
	case "pump":
		o := source.DefaultSimulatorOptions()
		o.Seed, o.Faults, o.Start = *seed, *faults, start
		if err := source.WriteCSV(w, *n, o); err != nil {
			return err
		}
	case "kiosk":
		o := source.DefaultKioskOptions()
		o.Seed, o.Faults, o.Users, o.Start = *seed, *faults, *users, start
		if !*faults {
			o.StruggleRate = 0
		}
		if err := source.WriteEventsJSONL(w, *n, o); err != nil {
			return err
		}
	default:
		fs.Usage()
		return ErrUsage
	}
	if f, ok := w.(*os.File); ok && f != os.Stdout {
		return f.Close()
	}
	return nil
}
