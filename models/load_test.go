//go:build cgo

package models

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigil-edge/vigil/inference"
	"github.com/vigil-edge/vigil/models/nn"
)

// denseAE is a small dense autoencoder for windows of window×channels.
func denseAE(t testing.TB, window, channels int) *nn.Network {
	t.Helper()
	n := &nn.Network{Input: []int{window, channels}, Layers: []nn.Layer{
		&nn.Dense{Units: 8, Act: nn.Tanh},
		&nn.Dense{Units: window * channels, Act: nn.Linear},
		&nn.Reshape{Shape: []int{window, channels}},
	}}
	if err := n.Randomize(rand.New(rand.NewPCG(1, 2))); err != nil {
		t.Fatal(err)
	}
	return n
}

// saved writes net with manifest m (adjusted by edit) to a temporary
// directory and returns dir/NAME.
func saved(t testing.TB, net *nn.Network, m *Manifest) string {
	t.Helper()
	b, err := net.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := Save(dir, m.Name, b, m); err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, m.Name)
}

func manifestFor(window int, channels ...string) *Manifest {
	m := &Manifest{
		Format: Format, Name: "ae", Version: "1", Kind: KindSensor,
		Input:     Input{Window: window, Hop: 1, Channels: channels},
		Output:    Output{Kind: OutputReconstruction, Reduction: ReduceMSE},
		Threshold: Threshold{Value: 1, Method: MethodManual},
	}
	for i := range channels {
		m.Normalization.Mean = append(m.Normalization.Mean, float64(10*i))
		m.Normalization.Std = append(m.Normalization.Std, float64(i+1))
	}
	return m
}

// TestLoadScoresLikeReference saves a model, loads it through TFLite, and
// checks Model.Score against the nn reference pass plus the reduction
// computed here.
func TestLoadScoresLikeReference(t *testing.T) {
	const window = 6
	chans := []string{"p", "q", "r"}
	net := denseAE(t, window, len(chans))
	for _, red := range []string{ReduceMSE, ReduceMAE, ReduceMaxChannelMSE} {
		t.Run(red, func(t *testing.T) {
			m := manifestFor(window, chans...)
			m.Output.Reduction = red
			md, err := Load(saved(t, net, m), inference.Options{Workers: 2})
			if err != nil {
				t.Fatal(err)
			}
			defer md.Close()
			r := rand.New(rand.NewPCG(3, 4))
			const batch = 9
			raw := make([]float64, batch*window*len(chans))
			norm := make([]float32, len(raw))
			for i := range raw {
				c := i % len(chans)
				raw[i] = m.Normalization.Mean[c] + m.Normalization.Std[c]*r.NormFloat64()
				norm[i] = float32((raw[i] - m.Normalization.Mean[c]) / m.Normalization.Std[c])
			}
			recon := make([]float64, len(raw))
			if err := net.Forward(norm, recon); err != nil {
				t.Fatal(err)
			}
			scores, contrib := make([]float64, batch), make([]float64, batch*len(chans))
			if err := md.Score(context.Background(), raw, scores, contrib); err != nil {
				t.Fatal(err)
			}
			per := window * len(chans)
			for w := range batch {
				ch := make([]float64, len(chans))
				for i := range per {
					d := recon[w*per+i] - float64(norm[w*per+i])
					if red == ReduceMAE {
						ch[i%len(chans)] += math.Abs(d) / window
					} else {
						ch[i%len(chans)] += d * d / window
					}
				}
				want := (ch[0] + ch[1] + ch[2]) / 3
				if red == ReduceMaxChannelMSE {
					want = max(ch[0], ch[1], ch[2])
				}
				if math.Abs(scores[w]-want) > 1e-5*want {
					t.Errorf("window %d: score %v, reference %v", w, scores[w], want)
				}
				for c := range ch {
					if got := contrib[w*len(chans)+c]; math.Abs(got-ch[c]) > 1e-5*ch[c]+1e-9 {
						t.Errorf("window %d channel %d: contribution %v, reference %v", w, c, got, ch[c])
					}
				}
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	net := denseAE(t, 4, 2)
	good := func() *Manifest { return manifestFor(4, "a", "b") }
	tests := []struct {
		name  string
		setup func(t *testing.T) string // returns the path to load
		want  []string
		is    error
	}{
		{"sha256 mismatch", func(t *testing.T) string {
			p := saved(t, net, good())
			b, _ := os.ReadFile(p + ".tflite")
			b[len(b)-1] ^= 1
			if err := os.WriteFile(p+".tflite", b, 0o644); err != nil {
				t.Fatal(err)
			}
			return p
		}, []string{"sha256: manifest says", "ae.tflite has"}, ErrChecksum},
		{"window disagrees", func(t *testing.T) string {
			p := saved(t, net, good())
			rewrite(t, p, func(m *Manifest) { m.Input.Window = 5; m.Input.Hop = 2 })
			return p
		}, []string{"input.window=5 and 2 input.channels declare input [5 2]", "the model's input tensor is [4 2]"}, nil},
		{"channels disagree", func(t *testing.T) string {
			p := saved(t, net, good())
			rewrite(t, p, func(m *Manifest) {
				m.Input.Channels = append(m.Input.Channels, "c")
				m.Normalization.Mean = append(m.Normalization.Mean, 0)
				m.Normalization.Std = append(m.Normalization.Std, 1)
			})
			return p
		}, []string{"declare input [4 3]", "input tensor is [4 2]"}, nil},
		{"output kind disagrees", func(t *testing.T) string {
			p := saved(t, net, good())
			rewrite(t, p, func(m *Manifest) { m.Output = Output{Kind: OutputScore, Reduction: ReduceFirst, Size: 1} })
			return p
		}, []string{"output.kind=score with output.size=1 declares output [1]", "output tensor is [4 2]"}, nil},
		{"invalid manifest", func(t *testing.T) string {
			p := saved(t, net, good())
			rewrite(t, p, func(m *Manifest) { m.Normalization.Std[1] = 0 })
			return p
		}, []string{"ae.json", "normalization.std[1]: is 0, want > 0"}, nil},
		{"name disagrees", func(t *testing.T) string {
			p := saved(t, net, good())
			if err := os.Rename(p+".json", p+"2.json"); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(p+".tflite", p+"2.tflite"); err != nil {
				t.Fatal(err)
			}
			return p + "2"
		}, []string{`name: manifest says "ae", the files are named "ae2"`}, nil},
		{"missing model", func(t *testing.T) string {
			p := saved(t, net, good())
			os.Remove(p + ".tflite")
			return p
		}, []string{"ae.tflite"}, os.ErrNotExist},
		{"missing manifest", func(t *testing.T) string {
			return filepath.Join(t.TempDir(), "nothing")
		}, []string{"nothing.json"}, os.ErrNotExist},
		{"not a model", func(t *testing.T) string {
			dir := t.TempDir()
			m := good()
			if err := Save(dir, "ae", []byte("definitely not a flatbuffer"), m); err != nil {
				t.Fatal(err)
			}
			return filepath.Join(dir, "ae")
		}, []string{"invalid model"}, inference.ErrInvalidModel},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			md, err := Load(tt.setup(t), inference.Options{Workers: 1})
			if err == nil {
				md.Close()
				t.Fatal("Load succeeded")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("error %v is not %v", err, tt.is)
			}
		})
	}
}

// rewrite edits the manifest beside a saved model, keeping its sha256.
func rewrite(t *testing.T, path string, edit func(*Manifest)) {
	t.Helper()
	b, err := os.ReadFile(path + ".json")
	if err != nil {
		t.Fatal(err)
	}
	m, err := DecodeManifest(b)
	if err != nil {
		t.Fatal(err)
	}
	edit(m)
	out, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+".json", out, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestSaveLoadAcceptsExtensions(t *testing.T) {
	p := saved(t, denseAE(t, 4, 2), manifestFor(4, "a", "b"))
	for _, path := range []string{p, p + ".json", p + ".tflite"} {
		md, err := Load(path, inference.Options{Workers: 1})
		if err != nil {
			t.Fatalf("Load(%s): %v", path, err)
		}
		md.Close()
	}
	if err := Save(t.TempDir(), "../x", []byte("x"), manifestFor(4, "a", "b")); err == nil {
		t.Error("Save accepted a name with a path in it")
	}
	bad := manifestFor(4, "a", "b")
	bad.Threshold.Method = ""
	if err := Save(t.TempDir(), "ae", []byte("x"), bad); err == nil || !strings.Contains(err.Error(), "threshold.method") {
		t.Errorf("Save with an invalid manifest: %v", err)
	}
}

func TestLoadedScoreNoAllocs(t *testing.T) {
	md, err := Load(saved(t, denseAE(t, 8, 3), manifestFor(8, "a", "b", "c")), inference.Options{Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer md.Close()
	checkScoreNoAllocs(t, md, make([]float64, 16*8*3), make([]float64, 16), make([]float64, 16*3), 50)
}

func BenchmarkModelScore(b *testing.B) {
	const window, channels = 32, 8
	chans := make([]string, channels)
	for i := range chans {
		chans[i] = fmt.Sprintf("c%d", i)
	}
	md, err := Load(saved(b, denseAE(b, window, channels), manifestFor(window, chans...)), inference.Options{Workers: 1})
	if err != nil {
		b.Fatal(err)
	}
	defer md.Close()
	for _, batch := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			raw := make([]float64, batch*window*channels)
			scores, contrib := make([]float64, batch), make([]float64, batch*channels)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if err := md.Score(ctx, raw, scores, contrib); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/window")
		})
	}
}
