package eval

import (
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/vigil-edge/vigil/models/train"
)

// An ensemble scores each window by more than the autoencoder (README.md,
// "Leave-files-out validation"): Options.Ensemble names its members and how
// they combine. Members are "ae" (the autoencoder's score), "q" and "t2"
// (train.PCA's Q and Hotelling T² of the window's rows, fitted on the same
// training rows with the same normalisation). Each member's score is
// divided by its own threshold calibrated at factor 1, so that 1 means "at
// its calibrated threshold" for every member; the detector's threshold is
// then Train.Calibration.Factor. A spec is one member ("t2") or a
// combination, "mean:" or "max:" and a comma-separated list of members
// ("mean:ae,t2", "max:ae,q,t2").
type ensemble struct {
	combine string // "mean" or "max"; "" for a single member
	members []string
}

// ensembleMembers are the members an ensemble may hold.
var ensembleMembers = []string{"ae", "q", "t2"}

// DefaultPCAVariance is the share of the training rows' variance the PCA
// keeps when Options.PCAVariance is 0.
const DefaultPCAVariance = 0.9

func parseEnsemble(spec string) (ensemble, error) {
	var e ensemble
	list := spec
	if c, rest, ok := strings.Cut(spec, ":"); ok {
		if c != "mean" && c != "max" {
			return e, fmt.Errorf("Ensemble %q: combine %q, want mean or max", spec, c)
		}
		e.combine, list = c, rest
	}
	for m := range strings.SplitSeq(list, ",") {
		m = strings.TrimSpace(m)
		if !slices.Contains(ensembleMembers, m) {
			return e, fmt.Errorf("Ensemble %q: member %q, want ae, q or t2", spec, m)
		}
		if slices.Contains(e.members, m) {
			return e, fmt.Errorf("Ensemble %q: member %q twice", spec, m)
		}
		e.members = append(e.members, m)
	}
	if e.combine == "" && len(e.members) > 1 {
		return e, fmt.Errorf("Ensemble %q: several members need mean: or max:", spec)
	}
	return e, nil
}

// scores turns the autoencoder's window scores ae (already divided by its
// factor-1 threshold) into the ensemble's, in place; the windows end at
// ends in rows, and the PCA is fitted on rows[:trainRows] with to.
func (e ensemble) scores(ae []float64, rows [][]float64, ends []int, trainRows int, to train.Options, variance float64) error {
	to.Calibration.Factor = 1
	var p *train.PCA
	if slices.Contains(e.members, "q") || slices.Contains(e.members, "t2") {
		var err error
		if p, err = train.FitPCA(rows[:trainRows], to, variance); err != nil {
			return err
		}
	}
	vals := make([]float64, 0, len(e.members))
	for i, end := range ends {
		vals = vals[:0]
		var q, t2 float64
		if p != nil {
			q, t2 = p.Score(rows[end+1-p.Window : end+1])
		}
		for _, m := range e.members {
			switch m {
			case "ae":
				vals = append(vals, ae[i])
			case "q":
				vals = append(vals, q/p.Q.Value)
			case "t2":
				vals = append(vals, t2/p.T2.Value)
			}
		}
		switch e.combine {
		case "max":
			ae[i] = slices.Max(vals)
		case "mean":
			s := 0.0
			for _, v := range vals {
				s += v
			}
			ae[i] = s / float64(len(vals))
		default:
			ae[i] = vals[0]
		}
		if math.IsNaN(ae[i]) {
			ae[i] = math.Inf(1)
		}
	}
	return nil
}
