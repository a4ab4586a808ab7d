package eval

import (
	"fmt"
	"math"
)

// Counts are a confusion matrix over rows: a row is positive when it is
// labelled anomalous, and predicted positive when the detector flagged it.
type Counts struct {
	TP int `json:"tp"`
	FP int `json:"fp"`
	FN int `json:"fn"`
	TN int `json:"tn"`
}

// Count compares predictions with labels row by row; the slices must have
// the same length.
func Count(pred, label []bool) Counts {
	if len(pred) != len(label) {
		panic(fmt.Sprintf("eval: %d predictions for %d labels", len(pred), len(label)))
	}
	var c Counts
	for i, p := range pred {
		switch {
		case p && label[i]:
			c.TP++
		case p:
			c.FP++
		case label[i]:
			c.FN++
		default:
			c.TN++
		}
	}
	return c
}

// Add returns the sum of two confusion matrices.
func (c Counts) Add(o Counts) Counts {
	return Counts{TP: c.TP + o.TP, FP: c.FP + o.FP, FN: c.FN + o.FN, TN: c.TN + o.TN}
}

// Rows is the number of rows counted.
func (c Counts) Rows() int { return c.TP + c.FP + c.FN + c.TN }

// F1 is SKAB's F1 score, TP / (TP + (FN+FP)/2). It is NaN when there is
// nothing to find and nothing was flagged (TP+FP+FN = 0).
func (c Counts) F1() float64 {
	return ratio(float64(c.TP), float64(c.TP)+float64(c.FN+c.FP)/2)
}

// FAR is the false alarm rate in percent, FP / (FP+TN) · 100: the share of
// normal rows flagged. It is NaN when there are no normal rows.
func (c Counts) FAR() float64 { return 100 * ratio(float64(c.FP), float64(c.FP+c.TN)) }

// MAR is the missed alarm rate in percent, FN / (FN+TP) · 100: the share of
// anomalous rows not flagged. It is NaN when there are no anomalous rows.
func (c Counts) MAR() float64 { return 100 * ratio(float64(c.FN), float64(c.FN+c.TP)) }

func ratio(a, b float64) float64 {
	if b == 0 {
		return math.NaN()
	}
	return a / b
}

// Summary is the line the CLI ends with, for example
// "F1=0.812 FAR=7.95 MAR=24.10 files=34 rows=23801".
func Summary(c Counts, files int) string {
	return fmt.Sprintf("F1=%.3f FAR=%.2f MAR=%.2f files=%d rows=%d", c.F1(), c.FAR(), c.MAR(), files, c.Rows())
}
