package train

import (
	"math"
	"math/rand/v2"

	"github.com/vigil-edge/vigil/models/nn"
)

// The trainer's layers mirror nn's, with float64 weights and a backward
// pass. Each processes one window at a time; a mini-batch accumulates the
// gradients of its windows. Activation derivatives are taken from the
// layer's output, so no pre-activation values are kept.

// param is a trainable tensor with its gradient and Adam moments.
type param struct {
	w, g, m, v []float64
}

func newParam(n int) *param {
	return &param{w: make([]float64, n), g: make([]float64, n), m: make([]float64, n), v: make([]float64, n)}
}

type layer interface {
	// out is the number of values the layer outputs per window.
	out() int
	// forward computes y from x.
	forward(x, y []float64)
	// backward adds the gradient of the loss with respect to the layer's
	// parameters, given dy = dL/dy, to the params' g, and writes dL/dx into
	// dx unless dx is nil.
	backward(x, y, dy, dx []float64)
	params() []*param
	// export returns the nn layer with the weights rounded to float32.
	export() nn.Layer
	// clone returns a layer that shares the weights but has its own
	// gradients and scratch, for a goroutine of its own.
	clone() layer
}

// shared returns a param with p's weights and its own gradient.
func (p *param) shared() *param { return &param{w: p.w, g: make([]float64, len(p.g))} }

// deriv is the derivative of act at the point where it output y.
func deriv(act nn.Activation, y float64) float64 {
	switch act {
	case nn.ReLU:
		if y > 0 {
			return 1
		}
		return 0
	case nn.Tanh:
		return 1 - y*y
	case nn.Sigmoid:
		return y * (1 - y)
	}
	return 1
}

// glorotInit fills w with Glorot-uniform values.
func glorotInit(r *rand.Rand, w []float64, fanIn, fanOut int) {
	limit := math.Sqrt(6 / float64(fanIn+fanOut))
	for i := range w {
		w[i] = (2*r.Float64() - 1) * limit
	}
}

type dense struct {
	in, units int
	act       nn.Activation
	w, b      *param
	dz        []float64
}

func newDense(r *rand.Rand, in, units int, act nn.Activation) *dense {
	l := &dense{in: in, units: units, act: act, w: newParam(units * in), b: newParam(units), dz: make([]float64, units)}
	glorotInit(r, l.w.w, in, units)
	return l
}

func (l *dense) out() int         { return l.units }
func (l *dense) params() []*param { return []*param{l.w, l.b} }

func (l *dense) forward(x, y []float64) {
	w := l.w.w
	for u := range l.units {
		row := w[u*l.in : (u+1)*l.in]
		s := l.b.w[u]
		for i, xi := range x {
			s += row[i] * xi
		}
		y[u] = l.act.Apply(s)
	}
}

func (l *dense) backward(x, y, dy, dx []float64) {
	for u := range l.units {
		l.dz[u] = dy[u] * deriv(l.act, y[u])
	}
	gw, gb, w := l.w.g, l.b.g, l.w.w
	for u, dz := range l.dz {
		gb[u] += dz
		if dz == 0 {
			continue
		}
		grow := gw[u*l.in : (u+1)*l.in]
		for i, xi := range x {
			grow[i] += dz * xi
		}
	}
	if dx == nil {
		return
	}
	clear(dx)
	for u, dz := range l.dz {
		if dz == 0 {
			continue
		}
		row := w[u*l.in : (u+1)*l.in]
		for i := range dx {
			dx[i] += row[i] * dz
		}
	}
}

func (l *dense) clone() layer {
	c := *l
	c.w, c.b, c.dz = l.w.shared(), l.b.shared(), make([]float64, len(l.dz))
	return &c
}

func (l *dense) export() nn.Layer {
	return &nn.Dense{Units: l.units, Act: l.act, Weights: round32(l.w.w), Bias: round32(l.b.w)}
}

type conv1d struct {
	steps, ch, filters, kernel, stride int
	pad                                nn.Padding
	outSteps, before                   int
	act                                nn.Activation
	w, b                               *param
	dz                                 []float64
}

func newConv1D(r *rand.Rand, steps, ch, filters, kernel, stride int, pad nn.Padding, act nn.Activation) *conv1d {
	l := &conv1d{
		steps: steps, ch: ch, filters: filters, kernel: kernel, stride: stride, pad: pad, act: act,
		outSteps: nn.ConvSteps(steps, kernel, stride, pad),
		before:   nn.ConvPadBefore(steps, kernel, stride, pad),
		w:        newParam(filters * kernel * ch), b: newParam(filters),
	}
	l.dz = make([]float64, l.outSteps*filters)
	glorotInit(r, l.w.w, kernel*ch, kernel*filters)
	return l
}

func (l *conv1d) out() int         { return l.outSteps * l.filters }
func (l *conv1d) params() []*param { return []*param{l.w, l.b} }

// taps returns the kernel positions [k0, k1) that fall inside the input
// for output step t, and the input step of tap 0.
func (l *conv1d) taps(t int) (k0, k1, src int) {
	src = t*l.stride - l.before
	k0 = max(0, -src)
	k1 = max(k0, min(l.kernel, l.steps-src))
	return k0, k1, src
}

func (l *conv1d) forward(x, y []float64) {
	kc := l.kernel * l.ch
	for t := range l.outSteps {
		k0, k1, src := l.taps(t)
		xs := x[(src+k0)*l.ch : (src+k1)*l.ch]
		for f := range l.filters {
			ws := l.w.w[f*kc+k0*l.ch : f*kc+k1*l.ch]
			s := l.b.w[f]
			for i, xi := range xs {
				s += ws[i] * xi
			}
			y[t*l.filters+f] = l.act.Apply(s)
		}
	}
}

func (l *conv1d) backward(x, y, dy, dx []float64) {
	for i := range l.dz {
		l.dz[i] = dy[i] * deriv(l.act, y[i])
	}
	if dx != nil {
		clear(dx)
	}
	kc := l.kernel * l.ch
	for t := range l.outSteps {
		k0, k1, src := l.taps(t)
		lo, hi := (src+k0)*l.ch, (src+k1)*l.ch
		xs := x[lo:hi]
		for f := range l.filters {
			dz := l.dz[t*l.filters+f]
			l.b.g[f] += dz
			if dz == 0 {
				continue
			}
			gs := l.w.g[f*kc+k0*l.ch : f*kc+k1*l.ch]
			for i, xi := range xs {
				gs[i] += dz * xi
			}
			if dx != nil {
				ws := l.w.w[f*kc+k0*l.ch : f*kc+k1*l.ch]
				ds := dx[lo:hi]
				for i, wi := range ws {
					ds[i] += wi * dz
				}
			}
		}
	}
}

func (l *conv1d) clone() layer {
	c := *l
	c.w, c.b, c.dz = l.w.shared(), l.b.shared(), make([]float64, len(l.dz))
	return &c
}

func (l *conv1d) export() nn.Layer {
	return &nn.Conv1D{Filters: l.filters, Kernel: l.kernel, Stride: l.stride, Padding: l.pad, Act: l.act,
		Weights: round32(l.w.w), Bias: round32(l.b.w)}
}

type upsample struct {
	steps, ch, factor int
}

func (l *upsample) out() int         { return l.steps * l.factor * l.ch }
func (l *upsample) params() []*param { return nil }

func (l *upsample) forward(x, y []float64) {
	for t := range l.steps * l.factor {
		src := t / l.factor
		copy(y[t*l.ch:(t+1)*l.ch], x[src*l.ch:(src+1)*l.ch])
	}
}

func (l *upsample) backward(_, _, dy, dx []float64) {
	if dx == nil {
		return
	}
	clear(dx)
	for t := range l.steps * l.factor {
		src := t / l.factor
		for c := range l.ch {
			dx[src*l.ch+c] += dy[t*l.ch+c]
		}
	}
}

func (l *upsample) export() nn.Layer { return &nn.Upsample1D{Factor: l.factor} }
func (l *upsample) clone() layer     { return l }

type crop struct {
	steps, ch, begin, length int
}

func (l *crop) out() int         { return l.length * l.ch }
func (l *crop) params() []*param { return nil }

func (l *crop) forward(x, y []float64) {
	copy(y, x[l.begin*l.ch:(l.begin+l.length)*l.ch])
}

func (l *crop) backward(_, _, dy, dx []float64) {
	if dx == nil {
		return
	}
	clear(dx)
	copy(dx[l.begin*l.ch:], dy)
}

func (l *crop) export() nn.Layer { return &nn.Crop1D{Begin: l.begin, Length: l.length} }
func (l *crop) clone() layer     { return l }

type reshape struct {
	shape []int
	n     int
}

func (l *reshape) out() int                        { return l.n }
func (l *reshape) params() []*param                { return nil }
func (l *reshape) forward(x, y []float64)          { copy(y, x) }
func (l *reshape) backward(_, _, dy, dx []float64) { copy(dx, dy) }
func (l *reshape) export() nn.Layer                { return &nn.Reshape{Shape: append([]int(nil), l.shape...)} }
func (l *reshape) clone() layer                    { return l }

func round32(w []float64) []float32 {
	out := make([]float32, len(w))
	for i, v := range w {
		out[i] = float32(v)
	}
	return out
}

// network is a stack of layers with the buffers of one window's forward
// and backward pass.
type network struct {
	inShape []int
	layers  []layer
	acts    [][]float64 // acts[0] is the input, acts[i+1] layer i's output
	grads   [][]float64 // grads[i] = dL/dacts[i]
	params  []*param
}

func newNetwork(inShape []int, layers []layer) *network {
	n := &network{inShape: inShape, layers: layers}
	in := 1
	for _, d := range inShape {
		in *= d
	}
	n.acts = append(n.acts, make([]float64, in))
	n.grads = append(n.grads, make([]float64, in))
	for _, l := range layers {
		n.acts = append(n.acts, make([]float64, l.out()))
		n.grads = append(n.grads, make([]float64, l.out()))
		n.params = append(n.params, l.params()...)
	}
	return n
}

// clone returns a network that shares n's weights, with its own
// gradients and buffers.
func (n *network) clone() *network {
	layers := make([]layer, len(n.layers))
	for i, l := range n.layers {
		layers[i] = l.clone()
	}
	return newNetwork(n.inShape, layers)
}

// addGrads adds o's gradients to n's.
func (n *network) addGrads(o *network) {
	for i, p := range n.params {
		for j, g := range o.params[i].g {
			p.g[j] += g
		}
	}
}

// forward runs one window and returns the output buffer (owned by n).
func (n *network) forward(x []float64) []float64 {
	copy(n.acts[0], x)
	for i, l := range n.layers {
		l.forward(n.acts[i], n.acts[i+1])
	}
	return n.acts[len(n.layers)]
}

// backward propagates dL/doutput, which the caller has written into
// n.grads[len(layers)], accumulating parameter gradients.
func (n *network) backward() {
	for i := len(n.layers) - 1; i >= 0; i-- {
		var dx []float64
		if i > 0 {
			dx = n.grads[i]
		}
		n.layers[i].backward(n.acts[i], n.acts[i+1], n.grads[i+1], dx)
	}
}

func (n *network) zeroGrad() {
	for _, p := range n.params {
		clear(p.g)
	}
}

// export returns the network as an nn.Network with float32 weights, and
// rounds the trainer's own weights to the same float32 values, so that the
// trainer's forward pass computes what the exported model computes.
func (n *network) export(description string) *nn.Network {
	out := &nn.Network{Input: append([]int(nil), n.inShape...), Description: description}
	for _, l := range n.layers {
		out.Layers = append(out.Layers, l.export())
	}
	for _, p := range n.params {
		for i, v := range p.w {
			p.w[i] = float64(float32(v))
		}
	}
	return out
}

// snapshot copies the weights; restore puts a snapshot back.
func (n *network) snapshot(dst [][]float64) [][]float64 {
	if dst == nil {
		dst = make([][]float64, len(n.params))
		for i, p := range n.params {
			dst[i] = make([]float64, len(p.w))
		}
	}
	for i, p := range n.params {
		copy(dst[i], p.w)
	}
	return dst
}

func (n *network) restore(src [][]float64) {
	for i, p := range n.params {
		copy(p.w, src[i])
	}
}

// adam is the Adam optimiser (Kingma & Ba, 2015) with bias correction.
type adam struct {
	lr, beta1, beta2, eps float64
	t                     int
}

func (a *adam) step(params []*param, scale float64) {
	a.t++
	c1 := 1 - math.Pow(a.beta1, float64(a.t))
	c2 := 1 - math.Pow(a.beta2, float64(a.t))
	for _, p := range params {
		for i, g := range p.g {
			g *= scale
			p.m[i] = a.beta1*p.m[i] + (1-a.beta1)*g
			p.v[i] = a.beta2*p.v[i] + (1-a.beta2)*g*g
			p.w[i] -= a.lr * (p.m[i] / c1) / (math.Sqrt(p.v[i]/c2) + a.eps)
		}
	}
}
