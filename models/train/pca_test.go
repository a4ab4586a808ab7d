package train

import (
	"math"
	"testing"
)

func TestSymEigenByHand(t *testing.T) {
	// [[2 1] [1 2]]: eigenvalues 3 and 1, vectors (1,1)/√2 and (1,-1)/√2.
	// diag(4, 1, 2) permuted: eigenvalues sorted 4, 2, 1 on the unit axes.
	tests := []struct {
		name string
		a    [][]float64
		vals []float64
		vecs [][]float64
	}{
		{"2x2", [][]float64{{2, 1}, {1, 2}}, []float64{3, 1}, [][]float64{{1 / math.Sqrt2, 1 / math.Sqrt2}, {1 / math.Sqrt2, -1 / math.Sqrt2}}},
		{"diagonal", [][]float64{{1, 0, 0}, {0, 4, 0}, {0, 0, 2}}, []float64{4, 2, 1}, [][]float64{{0, 1, 0}, {0, 0, 1}, {1, 0, 0}}},
	}
	for _, tt := range tests {
		vals, vecs := symEigen(tt.a)
		for i := range tt.vals {
			if math.Abs(vals[i]-tt.vals[i]) > 1e-12 {
				t.Errorf("%s: eigenvalue %d = %v, want %v", tt.name, i, vals[i], tt.vals[i])
			}
			// eigenvectors are defined up to sign
			dot := 0.0
			for k := range vecs[i] {
				dot += vecs[i][k] * tt.vecs[i][k]
			}
			if math.Abs(math.Abs(dot)-1) > 1e-12 {
				t.Errorf("%s: eigenvector %d = %v, want ±%v", tt.name, i, vecs[i], tt.vecs[i])
			}
		}
	}
}

func TestPCAScoreByHand(t *testing.T) {
	// One component (1,1)/√2 of variance 2, normalisation mean (1, 1) and
	// std (2, 2), centre 0. The row (7, 3) normalises to (3, 1); its
	// component score is 4/√2 = 2√2, so T² = 8/2 = 4; the residual is
	// (3,1) − (2,2) = (1,−1), so Q = 2. The row (1, 1) scores 0 and 0; a
	// window of both scores their means, Q 1 and T² 2.
	p := &PCA{
		Mean: []float64{1, 1}, Std: []float64{2, 2}, Center: []float64{0, 0},
		Components: [][]float64{{1 / math.Sqrt2, 1 / math.Sqrt2}}, Variances: []float64{2}, Window: 2,
	}
	q, t2 := p.RowScore([]float64{7, 3})
	if math.Abs(q-2) > 1e-9 || math.Abs(t2-4) > 1e-9 {
		t.Errorf("RowScore(7, 3) = Q %v, T² %v, want 2 and 4", q, t2)
	}
	q, t2 = p.Score([][]float64{{7, 3}, {1, 1}})
	if math.Abs(q-1) > 1e-9 || math.Abs(t2-2) > 1e-9 {
		t.Errorf("Score = Q %v, T² %v, want 1 and 2", q, t2)
	}
}

func TestFitPCAFindsThePlane(t *testing.T) {
	// Three channels, the third the sum of the first two (in normalised
	// units, up to a little noise): two components explain > 99 %, a row
	// off the plane has a large Q, a row on it a small one.
	var rows [][]float64
	for i := range 200 {
		a := math.Sin(float64(i) * 0.37)
		b := math.Cos(float64(i) * 0.11)
		rows = append(rows, []float64{a, b, a + b + 0.01*math.Sin(float64(i)*7.3)})
	}
	o := DefaultOptions()
	o.Window = 10
	p, err := FitPCA(rows, o, 0.99)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Components) != 2 {
		t.Fatalf("%d components (variances %v), want 2", len(p.Components), p.Variances)
	}
	on, _ := p.RowScore([]float64{0.5, 0.5, 1})
	off, _ := p.RowScore([]float64{0.5, 0.5, -1})
	if !(off > 100*on) {
		t.Errorf("Q on the plane %v, off it %v: want off ≫ on", on, off)
	}
	if !(p.Q.Value > 0) || !(p.T2.Value > 0) {
		t.Errorf("thresholds Q %v, T² %v, want > 0", p.Q.Value, p.T2.Value)
	}
	if _, err := FitPCA(rows, o, 0); err == nil {
		t.Error("variance 0: no error")
	}
}
