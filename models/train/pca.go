package train

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/vigil-edge/vigil/models"
)

// PCA is a principal-component model of normal rows, the linear scorer
// beside the autoencoder: each row is normalised as the autoencoder's
// input is (the same scaler, fitted on the same training rows and widened
// for drift the same way), projected on the leading components of the
// training rows' covariance, and scored by Q (the squared residual off the
// component subspace) and Hotelling's T² (the squared scores inside it,
// each over its component's variance). A window's score is the mean of its
// rows' scores, as the autoencoder's MSE is a mean over the window.
//
// It is fitted per row, not per window: a window of 60 samples of 8
// channels has 480 dimensions, and 400 warm-up rows give about 270
// overlapping training windows (about 7 independent ones), so a window
// covariance would be singular and T² undefined off its rank; 320 rows in
// 8 dimensions estimate a row covariance well.
type PCA struct {
	// Mean and Std normalise each channel (the autoencoder's normalisation
	// for the same options and rows).
	Mean, Std []float64
	// Center is the normalised training rows' mean, subtracted before
	// projecting.
	Center []float64
	// Components are unit eigenvectors of the normalised training rows'
	// covariance, largest eigenvalue first; Variances their eigenvalues.
	Components [][]float64
	Variances  []float64
	// Window is the number of rows a window score averages.
	Window int
	// Q and T2 are the thresholds calibrated on the window scores, as the
	// autoencoder's is (Options.Calibration).
	Q, T2 models.Threshold
}

// FitPCA fits a PCA to the warm-up rows samples with the autoencoder's
// options opts (Window, Validation, DriftHorizon, Robust, Calibration;
// the network's knobs are not used): it keeps the fewest components that
// explain at least the fraction variance of the training rows' variance
// (at least one, and one fewer than the channels at most, so that Q is not
// identically 0), then calibrates Q and T² on the window scores the way
// Train calibrates the autoencoder's.
func FitPCA(samples [][]float64, opts Options, variance float64) (*PCA, error) {
	if !(variance > 0 && variance <= 1) {
		return nil, fmt.Errorf("pca: variance fraction %v, want (0, 1]", variance)
	}
	if len(samples) == 0 || len(samples[0]) < 2 {
		return nil, errors.New("pca: want rows of at least 2 channels")
	}
	c := len(samples[0])
	if len(opts.Channels) == 0 {
		for i := range c {
			opts.Channels = append(opts.Channels, fmt.Sprintf("c%d", i))
		}
	}
	if err := checkRows(samples, c); err != nil {
		return nil, fmt.Errorf("pca: %w", err)
	}
	if opts.Window < 1 || len(samples) < opts.Window {
		return nil, fmt.Errorf("pca: %d rows, want at least one window of %d", len(samples), opts.Window)
	}
	rows := len(samples)
	trainRows, _ := splitRows(rows, opts.Validation, opts.Window)
	sc, _ := fitScaler(samples[:trainRows], opts.Channels, opts.Robust)
	if opts.DriftHorizon > 0 {
		sc.widen(samples, opts.DriftHorizon)
	}
	p := &PCA{Mean: sc.mean, Std: sc.std, Window: opts.Window}
	x := sc.windows(samples, 0, trainRows, 1, 1) // normalised rows
	p.Center = make([]float64, c)
	for _, r := range x {
		for j, v := range r {
			p.Center[j] += v / float64(len(x))
		}
	}
	cov := make([][]float64, c)
	for i := range cov {
		cov[i] = make([]float64, c)
	}
	for _, r := range x {
		for i := range c {
			for j := range c {
				cov[i][j] += (r[i] - p.Center[i]) * (r[j] - p.Center[j]) / float64(len(x))
			}
		}
	}
	vals, vecs := symEigen(cov)
	total := 0.0
	for _, v := range vals {
		total += max(v, 0)
	}
	k, cum := 0, 0.0
	for k < c-1 && (k == 0 || cum < variance*total) {
		if vals[k] <= 1e-12*total {
			break
		}
		cum += vals[k]
		k++
	}
	if k == 0 {
		return nil, errors.New("pca: the training rows do not vary")
	}
	p.Components, p.Variances = vecs[:k], vals[:k]

	qs, ts := p.windowScores(samples, 0, trainRows)
	qv, tv := p.windowScores(samples, trainRows, rows)
	var err error
	if p.Q, err = calibratePCA(qs, qv, opts.Calibration); err != nil {
		return nil, fmt.Errorf("pca: Q: %w", err)
	}
	if p.T2, err = calibratePCA(ts, tv, opts.Calibration); err != nil {
		return nil, fmt.Errorf("pca: T²: %w", err)
	}
	return p, nil
}

func calibratePCA(train, val []float64, c Calibration) (models.Threshold, error) {
	scores, source, scale := calibrationScores(train, val, c)
	th, _, err := Calibrate(scores, c, source)
	th.TrainScale = scale
	return th, err
}

// windowScores scores the windows of Window rows inside rows [from, to).
func (p *PCA) windowScores(samples [][]float64, from, to int) (q, t2 []float64) {
	for s := from; s+p.Window <= to; s++ {
		a, b := p.Score(samples[s : s+p.Window])
		q, t2 = append(q, a), append(t2, b)
	}
	return q, t2
}

// RowScore is one raw row's Q and T².
func (p *PCA) RowScore(row []float64) (q, t2 float64) {
	c := len(p.Mean)
	d := make([]float64, c)
	for j, v := range row {
		// as models.Model normalises: (x-mean)×(1/std) in float32
		d[j] = float64(float32((v-p.Mean[j])*(1/p.Std[j]))) - p.Center[j]
	}
	res := slices.Clone(d)
	for i, comp := range p.Components {
		s := 0.0
		for j, v := range comp {
			s += v * d[j]
		}
		t2 += s * s / p.Variances[i]
		for j, v := range comp {
			res[j] -= s * v
		}
	}
	for _, v := range res {
		q += v * v
	}
	return q, t2
}

// Score is a window's Q and T²: the means of its rows'.
func (p *PCA) Score(window [][]float64) (q, t2 float64) {
	for _, r := range window {
		a, b := p.RowScore(r)
		q += a
		t2 += b
	}
	n := float64(len(window))
	return q / n, t2 / n
}

// symEigen returns the eigenvalues of the symmetric matrix a, largest
// first, and the matching unit eigenvectors, by cyclic Jacobi rotations.
func symEigen(a [][]float64) ([]float64, [][]float64) {
	n := len(a)
	m := make([][]float64, n)
	v := make([][]float64, n) // v[i] is column i of the rotation product
	for i := range n {
		m[i] = slices.Clone(a[i])
		v[i] = make([]float64, n)
		v[i][i] = 1
	}
	for sweep := 0; sweep < 100; sweep++ {
		off := 0.0
		for i := range n {
			for j := i + 1; j < n; j++ {
				off += m[i][j] * m[i][j]
			}
		}
		if off < 1e-30 {
			break
		}
		for p := 0; p < n; p++ {
			for q := p + 1; q < n; q++ {
				if m[p][q] == 0 {
					continue
				}
				theta := (m[q][q] - m[p][p]) / (2 * m[p][q])
				t := math.Copysign(1, theta) / (math.Abs(theta) + math.Sqrt(theta*theta+1))
				cs := 1 / math.Sqrt(t*t+1)
				sn := t * cs
				for k := range n { // columns p, q
					mkp, mkq := m[k][p], m[k][q]
					m[k][p] = cs*mkp - sn*mkq
					m[k][q] = sn*mkp + cs*mkq
				}
				for k := range n { // rows p, q
					mpk, mqk := m[p][k], m[q][k]
					m[p][k] = cs*mpk - sn*mqk
					m[q][k] = sn*mpk + cs*mqk
				}
				for k := range n {
					vkp, vkq := v[k][p], v[k][q]
					v[k][p] = cs*vkp - sn*vkq
					v[k][q] = sn*vkp + cs*vkq
				}
			}
		}
	}
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(x, y int) int { return -cmpFloat(m[x][x], m[y][y]) })
	vals := make([]float64, n)
	vecs := make([][]float64, n)
	for r, i := range idx {
		vals[r] = m[i][i]
		vecs[r] = make([]float64, n)
		for k := range n {
			vecs[r][k] = v[k][i]
		}
	}
	return vals, vecs
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
