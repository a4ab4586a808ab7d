package daemon

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vigil-edge/vigil/agent/config"
	"github.com/vigil-edge/vigil/agent/internal/pipemodel"
	"github.com/vigil-edge/vigil/agent/pipeline"
	"github.com/vigil-edge/vigil/inference"
	"github.com/vigil-edge/vigil/models"
)

// Shadow run (models.shadow): a deployed model first scores the same
// windows as the serving model, through a tee that wraps the serving model
// in the pipeline (the serving model's scores, alerts and ids are
// untouched). Each model's share of windows over its threshold is counted;
// at models.shadow.windows windows or after models.shadow.duration,
// whichever first, the deployed model is promoted when its share is at
// most max(max_alert_rate, max_alert_ratio × the serving model's share),
// else dropped (rolled back). settings.json records the shadow model and
// when its run began, so the run goes on after a restart (its window
// counts start again; its duration does not). promote and rollback decide
// at once.

// shadowRun counts one stream's shadow run.
type shadowRun struct {
	Stream      string    `json:"-"`
	Model       string    `json:"model"`   // the shadow model, name@version
	Serving     string    `json:"serving"` // the serving model
	Started     time.Time `json:"started"`
	Windows     uint64    `json:"windows"`
	ServingOver uint64    `json:"serving_over_threshold"`
	ShadowOver  uint64    `json:"shadow_over_threshold"`
	ServingRate float64   `json:"serving_rate"`
	ShadowRate  float64   `json:"shadow_rate"`
	Error       string    `json:"error,omitempty"`

	mu      sync.Mutex
	decided bool
}

func (r *shadowRun) snapshot() *shadowRun {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := &shadowRun{Stream: r.Stream, Model: r.Model, Serving: r.Serving, Started: r.Started, Windows: r.Windows,
		ServingOver: r.ServingOver, ShadowOver: r.ShadowOver, Error: r.Error}
	if r.Windows > 0 {
		c.ServingRate = float64(r.ServingOver) / float64(r.Windows)
		c.ShadowRate = float64(r.ShadowOver) / float64(r.Windows)
	}
	return c
}

// tee is the serving model with the shadow model beside it.
type tee struct {
	pipeline.Model
	shadow           pipeline.Model
	thServing, thSh  float64
	run              *shadowRun
	d                *Daemon
	cfg              config.Shadow
	scores, chErrBuf []float64
	mu               sync.Mutex
}

func (t *tee) Score(ctx context.Context, windows, scores, channelErr []float64) error {
	if err := t.Model.Score(ctx, windows, scores, channelErr); err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(scores)
	if cap(t.scores) < n {
		t.scores = make([]float64, n)
	}
	if cap(t.chErrBuf) < len(channelErr) {
		t.chErrBuf = make([]float64, len(channelErr))
	}
	sh, ce := t.scores[:n], t.chErrBuf[:len(channelErr)]
	err := t.shadow.Score(ctx, windows, sh, ce)
	r := t.run
	r.mu.Lock()
	if err != nil {
		r.Error = err.Error()
	} else {
		for i := range n {
			r.Windows++
			if scores[i] > t.thServing {
				r.ServingOver++
			}
			if sh[i] > t.thSh {
				r.ShadowOver++
			}
		}
	}
	due := !r.decided && ((t.cfg.Windows > 0 && r.Windows >= uint64(t.cfg.Windows)) ||
		(t.cfg.Duration > 0 && time.Since(r.Started) >= t.cfg.Duration))
	if due {
		r.decided = true
	}
	r.mu.Unlock()
	if due {
		go t.d.shadowVerdict(r)
	}
	return nil
}

// shadowOn reports whether deployments run in shadow first.
func shadowOn(c config.Shadow) bool { return c.Windows > 0 || c.Duration > 0 }

// shadowFor returns the stream's shadow run for model ref, carrying the
// counts over from the previous generation when it is the same run.
func (d *Daemon) shadowFor(stream, ref, serving string, started time.Time) *shadowRun {
	d.shadowMu.Lock()
	defer d.shadowMu.Unlock()
	if d.shadows == nil {
		d.shadows = map[string]*shadowRun{}
	}
	if r := d.shadows[stream]; r != nil && r.Model == ref {
		r.mu.Lock()
		r.Serving = serving
		r.mu.Unlock()
		return r
	}
	r := &shadowRun{Stream: stream, Model: ref, Serving: serving, Started: started}
	d.shadows[stream] = r
	return r
}

func (d *Daemon) shadowState() map[string]*shadowRun {
	d.shadowMu.Lock()
	defer d.shadowMu.Unlock()
	out := map[string]*shadowRun{}
	for k, r := range d.shadows {
		if d.settings.get(k).Shadow == r.Model {
			out[k] = r.snapshot()
		}
	}
	return out
}

// shadowVerdict promotes or drops the shadow model once its run is over.
func (d *Daemon) shadowVerdict(r *shadowRun) {
	s := r.snapshot()
	cfg := d.config().Models.Shadow
	bound := max(cfg.MaxAlertRate, cfg.MaxAlertRatio*s.ServingRate)
	ctx, cancel := context.WithTimeout(d.runCtx, time.Minute)
	defer cancel()
	why := fmt.Sprintf("%d windows: %.1f%% over threshold, serving model %.1f%%, bound %.1f%%",
		s.Windows, 100*s.ShadowRate, 100*s.ServingRate, 100*bound)
	var msg string
	var err error
	if s.Error == "" && s.ShadowRate <= bound {
		msg, err = d.promote(ctx, r.Stream, "automatic: "+why)
	} else {
		if s.Error != "" {
			why = "the model failed to score: " + s.Error
		}
		msg, err = d.dropShadow(ctx, r.Stream, "automatic: "+why)
	}
	if err != nil {
		d.log.Error("shadow verdict", "stream", r.Stream, "model", r.Model, "err", err)
		return
	}
	d.log.Info("shadow verdict", "stream", r.Stream, "model", r.Model, "outcome", msg)
}

// promote makes a stream's shadow model serve.
func (d *Daemon) promote(ctx context.Context, stream, reason string) (string, error) {
	d.promoteMu.Lock()
	defer d.promoteMu.Unlock()
	before := d.settings.get(stream)
	if before.Shadow == "" {
		return "", fmt.Errorf("stream %s has no model in shadow: nothing to promote", stream)
	}
	if err := d.settings.update(stream, func(s *streamSettings) {
		s.Previous, s.Model, s.ModelAt = s.Model, s.Shadow, time.Now().UTC()
		s.Shadow, s.ShadowAt = "", time.Time{}
	}); err != nil {
		return "", err
	}
	if err := d.rebuildNow(ctx); err != nil {
		d.settings.update(stream, func(s *streamSettings) { *s = before })
		return "", fmt.Errorf("stream %s: promotion of %s failed: %w", stream, before.Shadow, err)
	}
	d.deploy.outcome(before.Shadow, "serving "+stream+" (promoted, "+reason+")")
	d.republish()
	return fmt.Sprintf("stream %s: %s promoted (%s)", stream, before.Shadow, reason), nil
}

// dropShadow ends a stream's shadow run; the serving model carries on.
func (d *Daemon) dropShadow(ctx context.Context, stream, reason string) (string, error) {
	d.promoteMu.Lock()
	defer d.promoteMu.Unlock()
	before := d.settings.get(stream)
	if before.Shadow == "" {
		return "", fmt.Errorf("stream %s has no model in shadow", stream)
	}
	if err := d.settings.update(stream, func(s *streamSettings) { s.Shadow, s.ShadowAt = "", time.Time{} }); err != nil {
		return "", err
	}
	if err := d.rebuildNow(ctx); err != nil {
		return "", fmt.Errorf("stream %s: %w", stream, err)
	}
	d.deploy.outcome(before.Shadow, "rolled-back on "+stream+" ("+reason+")")
	return fmt.Sprintf("stream %s: %s rolled back (%s); %s keeps serving", stream, before.Shadow, reason, orNone(d.effective()[stream].Model)), nil
}

// republish publishes the retained status anew (it names the serving models).
func (d *Daemon) republish() {
	if p := d.publisher; p != nil {
		if err := p.Rebirth(); err != nil {
			d.log.Warn("republishing the status", "err", err)
		}
	}
}

// shadowTee loads a stream's shadow model and returns the tee serving
// spec.Model with it beside, and the loaded model (closed with the
// generation).
func (d *Daemon) shadowTee(cfg *config.Config, sc config.Stream, spec pipeline.StreamSpec, over streamSettings) (pipeline.Model, *models.Model, error) {
	name, _, _ := strings.Cut(over.Shadow, "@")
	iopts := inference.DefaultOptions()
	iopts.Workers, iopts.Threads, iopts.XNNPACK = 1, cfg.Inference.Threads, cfg.Inference.XNNPACK
	m, err := models.Load(filepath.Join(cfg.DataDir, "models", over.Shadow, name), iopts)
	if err != nil {
		return nil, nil, err
	}
	sm := pipemodel.Adapt(m)
	l1, h1 := spec.Model.Window()
	l2, h2 := sm.Window()
	if err := fits(sc, m.Manifest()); err != nil || l1 != l2 || h1 != h2 || !slices.Equal(spec.Model.Channels(), sm.Channels()) {
		m.Close()
		return nil, nil, fmt.Errorf("%s does not score the same windows as %s (%v)", over.Shadow, spec.Model.ID(), err)
	}
	th, thSh := spec.Model.Threshold(), sm.Threshold()
	if spec.Threshold > 0 {
		th, thSh = spec.Threshold, spec.Threshold
	}
	started := over.ShadowAt
	if started.IsZero() {
		started = time.Now()
	}
	run := d.shadowFor(sc.Name, over.Shadow, spec.Model.ID(), started)
	return &tee{Model: spec.Model, shadow: sm, thServing: th, thSh: thSh, run: run, d: d, cfg: cfg.Models.Shadow}, m, nil
}
