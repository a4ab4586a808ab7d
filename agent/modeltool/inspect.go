package modeltool

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"

	"github.com/vigil-edge/vigil/inference"
)

func runInspect(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("model inspect", stderr, "FILE.tflite [--json]")
	asJSON := fs.Bool("json", false, "print the description as JSON")
	pos, err := parse(fs, args, 1, "one .tflite file")
	if err != nil {
		return err
	}
	b, err := os.ReadFile(pos[0])
	if err != nil {
		return err
	}
	info, err := inference.Inspect(b)
	if err != nil {
		return fmt.Errorf("%s: %w", pos[0], err)
	}
	if *asJSON {
		out := struct {
			File    string `json:"file"`
			Runtime string `json:"runtime"`
			*inference.ModelInfo
		}{pos[0], inference.Version(), info}
		e := json.NewEncoder(stdout)
		e.SetIndent("", "  ")
		return e.Encode(out)
	}
	return printInfo(stdout, pos[0], info)
}

func printInfo(w io.Writer, file string, info *inference.ModelInfo) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "%s: %d bytes, schema version %d, %d subgraph(s), %d tensors, %d nodes\n",
		file, info.Size, info.Version, info.Subgraphs, info.Tensors, info.Nodes)
	if info.Description != "" {
		fmt.Fprintf(tw, "description: %s\n", info.Description)
	}
	fmt.Fprintf(tw, "parameters: %d (%d bytes)\n\n", info.Params, info.ParamBytes)
	fmt.Fprintln(tw, "TENSOR\tNAME\tSHAPE\tTYPE\tSCALE\tZERO POINT")
	row := func(kind string, t inference.TensorInfo) {
		scale, zp := "-", "-"
		if t.Quantized() {
			scale, zp = fmt.Sprintf("%g", t.Scale), fmt.Sprint(t.ZeroPoint)
		}
		fmt.Fprintf(tw, "%s\t%s\t%v\t%s\t%s\t%s\n", kind, t.Name, t.Shape, t.Type, scale, zp)
	}
	for _, t := range info.Inputs {
		row("input", t)
	}
	for _, t := range info.Outputs {
		row("output", t)
	}
	fmt.Fprintf(tw, "\nOPERATOR\tVERSION\tNODES\tIN TFLITE %s\n", inference.Version())
	missing := 0
	for _, op := range info.Operators {
		name := op.Name
		if op.Custom != "" {
			name = "custom " + op.Custom
		}
		has := "yes"
		if !op.Supported {
			has = "NO"
			missing++
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%s\n", name, op.Version, op.Nodes, has)
	}
	if missing > 0 {
		fmt.Fprintf(tw, "\n%d operator(s) are not in this runtime: the model will not load.\n", missing)
	}
	return tw.Flush()
}
