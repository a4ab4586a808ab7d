package nn

import "fmt"

// Forward is the reference forward pass: it runs the network on a batch of
// windows laid out back to back in in (each the size of Input) and writes
// the outputs back to back into out, in float64. The float32 weights are
// used exactly; the arithmetic is float64, so the result is what TFLite's
// float32 kernels approximate.
func (n *Network) Forward(in []float32, out []float64) error {
	shapes, err := n.Shapes()
	if err != nil {
		return err
	}
	is, os := size(n.Input), size(shapes[len(shapes)-1])
	if len(in) == 0 || len(in)%is != 0 {
		return fmt.Errorf("nn: forward: input has %d values, want a positive multiple of %d", len(in), is)
	}
	batch := len(in) / is
	if len(out) != batch*os {
		return fmt.Errorf("nn: forward: output has %d values, want %d for %d windows", len(out), batch*os, batch)
	}
	largest := is
	for _, s := range shapes {
		largest = max(largest, size(s))
	}
	a, b := make([]float64, largest), make([]float64, largest)
	for w := range batch {
		for i, v := range in[w*is : (w+1)*is] {
			a[i] = float64(v)
		}
		inShape := n.Input
		for i, l := range n.Layers {
			outShape := shapes[i]
			l.forward(a[:size(inShape)], b[:size(outShape)], inShape, outShape)
			a, b = b, a
			inShape = outShape
		}
		copy(out[w*os:(w+1)*os], a[:os])
	}
	return nil
}

func (l *Dense) forward(in, out []float64, _, _ []int) {
	n := len(in)
	for u := range l.Units {
		row := l.Weights[u*n : (u+1)*n]
		s := float64(l.Bias[u])
		for i, x := range in {
			s += float64(row[i]) * x
		}
		out[u] = l.Act.Apply(s)
	}
}

func (l *Conv1D) forward(in, out []float64, inShape, outShape []int) {
	steps, ch := inShape[0], inShape[1]
	pad := ConvPadBefore(steps, l.Kernel, l.Stride, l.Padding)
	for t := range outShape[0] {
		start := t*l.Stride - pad
		for f := range l.Filters {
			s := float64(l.Bias[f])
			for k := range l.Kernel {
				src := start + k
				if src < 0 || src >= steps {
					continue
				}
				w := l.Weights[(f*l.Kernel+k)*ch : (f*l.Kernel+k+1)*ch]
				x := in[src*ch : (src+1)*ch]
				for c := range ch {
					s += float64(w[c]) * x[c]
				}
			}
			out[t*l.Filters+f] = l.Act.Apply(s)
		}
	}
}

func (l *Upsample1D) forward(in, out []float64, inShape, outShape []int) {
	ch := inShape[1]
	for t := range outShape[0] {
		src := t / l.Factor
		copy(out[t*ch:(t+1)*ch], in[src*ch:(src+1)*ch])
	}
}

func (l *Crop1D) forward(in, out []float64, inShape, _ []int) {
	ch := inShape[1]
	copy(out, in[l.Begin*ch:(l.Begin+l.Length)*ch])
}

func (l *Reshape) forward(in, out []float64, _, _ []int) { copy(out, in) }
