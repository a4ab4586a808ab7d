package stream

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/vigil-edge/vigil/agent/source"
	"github.com/vigil-edge/vigil/models"
)

// Behaviour computes a behaviour model's features for one key (one user):
// over the key's events in the last Features.Window it counts events by name,
// the share of failures, and statistics of the gaps between events, as the
// model's manifest declares. It emits a vector on an event at most once per
// Features.Step (every event when Step is 0).
//
// An event is a failure when its name contains "error" or "fail", or its
// properties say so: "ok": false, "success": false, or "status": "failed" /
// "error".
type Behaviour struct {
	spec     *models.Features
	window   time.Duration
	step     time.Duration
	events   []evt // within the window, oldest first
	lastEmit time.Time
}

type evt struct {
	t    time.Time
	name string
	fail bool
}

// NewBehaviour returns a featurizer for spec; the spec's feature list must be
// valid (models.Manifest.Validate checks it).
func NewBehaviour(spec *models.Features) (*Behaviour, error) {
	if spec == nil || len(spec.List) == 0 {
		return nil, fmt.Errorf("stream: behaviour features: empty feature list")
	}
	if time.Duration(spec.Window) <= 0 {
		return nil, fmt.Errorf("stream: behaviour features: window %v, want > 0", time.Duration(spec.Window))
	}
	return &Behaviour{spec: spec, window: time.Duration(spec.Window), step: time.Duration(spec.Step)}, nil
}

// Failed reports whether an event counts as a failure.
func Failed(e *source.Event) bool {
	n := strings.ToLower(e.Name)
	if strings.Contains(n, "error") || strings.Contains(n, "fail") {
		return true
	}
	for _, k := range []string{"ok", "success"} {
		if v, ok := e.Properties[k].(bool); ok && !v {
			return true
		}
	}
	if s, ok := e.Properties["status"].(string); ok {
		s = strings.ToLower(s)
		return s == "failed" || s == "error" || s == "failure"
	}
	return false
}

// Add takes the key's next event and, unless within Step of the last
// vector, writes the feature vector (one value per feature) into dst.
func (b *Behaviour) Add(e *source.Event, dst []float64) bool {
	t := e.Time
	b.events = append(b.events, evt{t: t, name: e.Name, fail: Failed(e)})
	cut := 0
	for cut < len(b.events) && t.Sub(b.events[cut].t) > b.window {
		cut++
	}
	if cut > 0 {
		b.events = append(b.events[:0], b.events[cut:]...)
	}
	if b.step > 0 && !b.lastEmit.IsZero() && t.Sub(b.lastEmit) < b.step {
		return false
	}
	b.lastEmit = t
	b.features(dst)
	return true
}

func (b *Behaviour) features(dst []float64) {
	var fails int
	names := map[string]struct{}{}
	for _, e := range b.events {
		if e.fail {
			fails++
		}
		names[e.name] = struct{}{}
	}
	// Gaps between consecutive events, in seconds.
	var gapSum, gapSq float64
	gapMin, gapMax := math.Inf(1), 0.0
	ngaps := len(b.events) - 1
	for i := 1; i < len(b.events); i++ {
		g := b.events[i].t.Sub(b.events[i-1].t).Seconds()
		gapSum += g
		gapSq += g * g
		gapMin = math.Min(gapMin, g)
		gapMax = math.Max(gapMax, g)
	}
	gapMean, gapStd := 0.0, 0.0
	if ngaps > 0 {
		gapMean = gapSum / float64(ngaps)
		gapStd = math.Sqrt(math.Max(0, gapSq/float64(ngaps)-gapMean*gapMean))
	} else {
		// One event: no gap yet; report the window as the gap so that a
		// lone event does not look like a burst.
		gapMin, gapMax, gapMean = b.window.Seconds(), b.window.Seconds(), b.window.Seconds()
	}
	for i, f := range b.spec.List {
		var v float64
		switch f.Op {
		case models.FeatureCount:
			for _, e := range b.events {
				if e.name == f.Event {
					v++
				}
			}
		case models.FeatureTotal:
			v = float64(len(b.events))
		case models.FeatureDistinct:
			v = float64(len(names))
		case models.FeatureFailureRatio:
			v = float64(fails) / float64(len(b.events))
		case models.FeatureGapMean:
			v = gapMean
		case models.FeatureGapStd:
			v = gapStd
		case models.FeatureGapMin:
			v = gapMin
		case models.FeatureGapMax:
			v = gapMax
		}
		if i < len(dst) {
			dst[i] = v
		}
	}
}
