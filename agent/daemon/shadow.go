package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vigil-edge/vigil/agent/config"
	"github.com/vigil-edge/vigil/agent/internal/pipemodel"
	"github.com/vigil-edge/vigil/agent/pipeline"
	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/inference"
	"github.com/vigil-edge/vigil/models"
)

// Shadow run (models.shadow): a deployed model first scores the same
// windows as the serving model, through a tee that wraps the serving model
// in the pipeline (the serving model's scores, alerts and ids are
// untouched). Each model's share of windows over its threshold is counted,
// and its scores relative to its threshold are kept in a fixed-bin sketch
// (shadowdist.go), so health compares the two distributions (mean, p50,
// p90, p99, and the Kolmogorov–Smirnov statistic). Each window the shadow
// model scores is a record.Shadow in the buffer's shadow lane, which the
// MQTT publisher sends on <prefix>/<device>/shadow/<stream> like the scores
// (durable as they are, at mqtt's score QoS).
//
// At models.shadow.windows windows or after models.shadow.duration,
// whichever first, the deployed model is promoted when its share is at
// most max(max_alert_rate, max_alert_ratio × the serving model's share),
// else dropped (rolled back), as is at once a shadow model that fails to
// score; from then on the tee scores nothing more with it. promote and
// rollback decide at once.
//
// A run survives a restart: settings.json records the shadow model and when
// its run began, and data_dir/shadow/<stream>.json its counts and sketches,
// written every shadowSaveEvery windows (off the scoring goroutine) and at
// shutdown, atomically like settings.json. After a restart the counts carry
// on from the last write (a SIGKILL loses the count of at most the windows
// scored since then; the run counts as many more), and the verdict comes at
// models.shadow.windows in all.

// shadowSaveEvery is how many windows a shadow run scores between writes
// of its state.
const shadowSaveEvery = 20

// shadowRun counts one stream's shadow run.
type shadowRun struct {
	Stream       string         `json:"-"`
	Model        string         `json:"model"`   // the shadow model, name@version
	Serving      string         `json:"serving"` // the serving model
	Started      time.Time      `json:"started"`
	Windows      uint64         `json:"windows"`
	ServingOver  uint64         `json:"serving_over_threshold"`
	ShadowOver   uint64         `json:"shadow_over_threshold"`
	ServingRate  float64        `json:"serving_rate"`
	ShadowRate   float64        `json:"shadow_rate"`
	Distribution distComparison `json:"distribution"`               // scores relative to each model's threshold
	Restored     uint64         `json:"restored_windows,omitempty"` // windows counted before the last restart
	Error        string         `json:"error,omitempty"`

	mu          sync.Mutex
	decided     bool
	servingDist scoreDist
	shadowDist  scoreDist
	saved       uint64 // Windows at the last state taken for a write

	// writeMu orders the writes of the state (off the scoring path);
	// written is the Windows of the last one, ended is set once the run's
	// verdict removed the file, so that no write brings it back.
	writeMu sync.Mutex
	written uint64
	ended   bool
}

func (r *shadowRun) snapshot() *shadowRun {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := &shadowRun{Stream: r.Stream, Model: r.Model, Serving: r.Serving, Started: r.Started, Windows: r.Windows,
		ServingOver: r.ServingOver, ShadowOver: r.ShadowOver, Error: r.Error, Restored: r.Restored,
		Distribution: compareDists(&r.servingDist, &r.shadowDist)}
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
	device           string
	cfg              config.Shadow
	scores, chErrBuf []float64
	mu               sync.Mutex
}

// Confidence, MaxRuns and LevelShift are the serving model's: the tee embeds
// only the pipeline.Model interface, which lacks the optional ones.
func (t *tee) Confidence(score float64) (float64, bool) {
	if c, ok := t.Model.(pipeline.Confider); ok {
		return c.Confidence(score)
	}
	return 0, false
}

func (t *tee) LevelShift() (recent int, floor, max []float64) {
	if s, ok := t.Model.(pipeline.LevelShifter); ok {
		return s.LevelShift()
	}
	return 0, nil, nil
}

func (t *tee) MaxRuns() []int {
	if s, ok := t.Model.(pipeline.RunRecorder); ok {
		return s.MaxRuns()
	}
	return nil
}

func (t *tee) Score(ctx context.Context, windows, scores, channelErr []float64) error {
	if err := t.Model.Score(ctx, windows, scores, channelErr); err != nil {
		return err
	}
	r := t.run
	r.mu.Lock()
	decided := r.decided
	r.mu.Unlock()
	if decided {
		return nil // the verdict is in: the shadow model scores no more
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
	spans := pipeline.Spans(ctx)
	publish := len(spans) == n && t.d.publisher != nil
	var recs [][]byte
	r.mu.Lock()
	if err != nil {
		r.Error = err.Error()
	} else {
		for i := range n {
			r.Windows++
			servingOver, shadowOver := scores[i] > t.thServing, sh[i] > t.thSh
			if servingOver {
				r.ServingOver++
			}
			if shadowOver {
				r.ShadowOver++
			}
			r.servingDist.add(scores[i], t.thServing)
			r.shadowDist.add(sh[i], t.thSh)
			if publish {
				w := spans[i]
				b, _ := json.Marshal(record.Shadow{
					ID: record.ShadowID(t.device, r.Stream, w.Key, w.End, r.Model, w.Seq), TS: w.End,
					Stream: r.Stream, Key: w.Key, Window: record.Window{Start: w.Start, End: w.End},
					Model: r.Model, Score: finite(sh[i]), Threshold: t.thSh, Over: shadowOver,
					Serving: r.Serving, ServingScore: finite(scores[i]), ServingThreshold: t.thServing, ServingOver: servingOver,
				})
				recs = append(recs, b)
			}
		}
	}
	due := r.Error != "" || (t.cfg.Windows > 0 && r.Windows >= uint64(t.cfg.Windows)) ||
		(t.cfg.Duration > 0 && time.Since(r.Started) >= t.cfg.Duration)
	if due {
		r.decided = true
	}
	var state []byte
	at := r.Windows
	if !due && r.Windows-r.saved >= shadowSaveEvery {
		state, r.saved = r.stateLocked(), r.Windows
	}
	r.mu.Unlock()
	if len(recs) > 0 {
		if _, err := t.d.buf.Append(context.WithoutCancel(ctx), record.LaneShadow, recs...); err != nil {
			t.d.log.Warn("shadow: appending the shadow scores", "stream", r.Stream, "records", len(recs), "err", err)
		}
	}
	if state != nil {
		// An fsync is no business of the scoring path.
		go t.d.writeShadowState(r, at, state)
	}
	if due {
		go t.d.shadowVerdict(r)
	}
	return nil
}

// finite keeps a score JSON can carry (as the pipeline does).
func finite(x float64) float64 {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return math.MaxFloat32
	}
	return x
}

// shadowState is what data_dir/shadow/<stream>.json holds.
type shadowState struct {
	Version     int       `json:"version"`
	Model       string    `json:"model"`
	Serving     string    `json:"serving"`
	Started     time.Time `json:"started"`
	Windows     uint64    `json:"windows"`
	ServingOver uint64    `json:"serving_over_threshold"`
	ShadowOver  uint64    `json:"shadow_over_threshold"`
	ServingDist scoreDist `json:"serving_dist"`
	ShadowDist  scoreDist `json:"shadow_dist"`
}

const shadowStateVersion = 1

func (r *shadowRun) stateLocked() []byte {
	b, _ := json.Marshal(shadowState{Version: shadowStateVersion, Model: r.Model, Serving: r.Serving, Started: r.Started,
		Windows: r.Windows, ServingOver: r.ServingOver, ShadowOver: r.ShadowOver, ServingDist: r.servingDist, ShadowDist: r.shadowDist})
	return b
}

func (st *shadowState) formatVersion() int { return st.Version }

// decodeShadowState decodes a shadow run's state strictly and checks that
// its counts agree.
func decodeShadowState(b []byte) (shadowState, error) {
	var st shadowState
	if err := decodeStrict(b, &st, "state", shadowStateVersion); err != nil {
		return st, err
	}
	if n, v, ok := strings.Cut(st.Model, "@"); !ok || n == "" || v == "" {
		return st, fmt.Errorf("model %q is not NAME@VERSION", st.Model)
	}
	if st.ServingOver > st.Windows || st.ShadowOver > st.Windows {
		return st, errors.New("more windows over the threshold than windows")
	}
	for _, d := range []scoreDist{st.ServingDist, st.ShadowDist} {
		if len(d.Bins) != distBins+1 {
			return st, fmt.Errorf("%d bins, want %d", len(d.Bins), distBins+1)
		}
		var sum uint64
		for _, c := range d.Bins {
			sum += c
		}
		if sum != d.N || d.N != st.Windows || math.IsNaN(d.Sum) || d.Sum < 0 || math.IsNaN(d.Max) || d.Max < 0 {
			return st, errors.New("the sketches do not agree with the window count")
		}
	}
	return st, nil
}

func (d *Daemon) shadowStatePath(stream string) string {
	return filepath.Join(d.config().DataDir, "shadow", url.PathEscape(stream)+".json")
}

// writeShadowState writes a run's state taken at `windows` windows, unless
// that one or a later one was written, or the run ended.
func (d *Daemon) writeShadowState(r *shadowRun, windows uint64, b []byte) {
	r.writeMu.Lock()
	defer r.writeMu.Unlock()
	if r.ended || windows <= r.written {
		return
	}
	if err := writeFileAtomic(d.shadowStatePath(r.Stream), b, 0o644); err != nil {
		d.log.Warn("shadow: saving the run's state", "stream", r.Stream, "err", err)
		return
	}
	r.written = windows
}

// saveShadows writes the state of every undecided shadow run (at shutdown,
// once the pipeline has drained).
func (d *Daemon) saveShadows() {
	d.shadowMu.Lock()
	runs := make([]*shadowRun, 0, len(d.shadows))
	for _, r := range d.shadows {
		runs = append(runs, r)
	}
	d.shadowMu.Unlock()
	for _, r := range runs {
		r.mu.Lock()
		var state []byte
		windows := r.Windows
		if !r.decided && d.settings.get(r.Stream).Shadow == r.Model {
			state, r.saved = r.stateLocked(), r.Windows
		}
		r.mu.Unlock()
		if state != nil {
			d.writeShadowState(r, windows, state)
		}
	}
}

// forgetShadow ends a stream's run in memory and on disk (its verdict is in).
func (d *Daemon) forgetShadow(stream string) {
	d.shadowMu.Lock()
	r := d.shadows[stream]
	delete(d.shadows, stream)
	d.shadowMu.Unlock()
	if r != nil {
		r.writeMu.Lock()
		defer r.writeMu.Unlock()
		r.ended = true
	}
	if err := os.Remove(d.shadowStatePath(stream)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		d.log.Warn("shadow: removing the run's state", "stream", stream, "err", err)
	}
}

// cleanShadowLeftovers removes, at start, what a crash left of shadow
// runs: the state file of a run whose verdict settings.json already
// records (a SIGKILL between the promotion's or rollback's write of the
// settings and the removal of the file), and temporary files of
// interrupted atomic writes in the shadow directory.
func cleanShadowLeftovers(dataDir string, settings *settingsStore) {
	dir := filepath.Join(dataDir, "shadow")
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		n := e.Name()
		stale := strings.HasPrefix(n, ".") && strings.Contains(n, ".tmp-")
		if stream, err := url.PathUnescape(strings.TrimSuffix(n, ".json")); err == nil && strings.HasSuffix(n, ".json") && !stale {
			stale = settings.get(stream).Shadow == ""
		}
		if !stale {
			continue
		}
		os.Remove(filepath.Join(dir, n)) // a failure leaves a file no run reads
	}
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
	r := &shadowRun{Stream: stream, Model: ref, Serving: serving, Started: started, servingDist: newScoreDist(), shadowDist: newScoreDist()}
	if b, err := os.ReadFile(d.shadowStatePath(stream)); err == nil {
		// The same run before a restart: its counts carry on.
		st, err := decodeShadowState(b)
		switch {
		case err != nil:
			d.log.Warn("shadow: the run's saved state is unreadable; counting again", "stream", stream, "err", err)
		case st.Model == ref && st.Started.Equal(started):
			r.Windows, r.ServingOver, r.ShadowOver = st.Windows, st.ServingOver, st.ShadowOver
			r.servingDist, r.shadowDist = st.ServingDist, st.ShadowDist
			r.Restored, r.saved, r.written = st.Windows, st.Windows, st.Windows
		}
	}
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

// shadowSummary is shadowState in one line for the status command:
// "pump1 pump8@5 beside pump8@4, 812 windows (600 before a restart), over
// threshold 0.6% vs 0.4%, score/threshold p50 0.63 vs 0.58, KS 0.071".
func (d *Daemon) shadowSummary() string {
	return summary(d.shadowState(), "; ", func(n string, r *shadowRun) string {
		restored := ""
		if r.Restored > 0 {
			restored = fmt.Sprintf(" (%d before a restart)", r.Restored)
		}
		dc := r.Distribution
		return fmt.Sprintf("%s %s beside %s, %d windows%s, over threshold %.1f%% vs %.1f%%, score/threshold p50 %.3g vs %.3g, KS %.3f",
			n, r.Model, r.Serving, r.Windows, restored, 100*r.ShadowRate, 100*r.ServingRate, dc.Shadow.P50, dc.Serving.P50, dc.KS)
	})
}

// shadowVerdict promotes or drops the shadow model once its run is over.
func (d *Daemon) shadowVerdict(r *shadowRun) {
	s := r.snapshot()
	cfg := d.config().Models.Shadow
	bound := max(cfg.MaxAlertRate, cfg.MaxAlertRatio*s.ServingRate)
	ctx, cancel := context.WithTimeout(d.runCtx, time.Minute)
	defer cancel()
	dc := s.Distribution
	why := fmt.Sprintf("%d windows: %.1f%% over threshold, serving model %.1f%%, bound %.1f%%; score/threshold p50 %.3g vs %.3g, p99 %.3g vs %.3g, KS %.3f",
		s.Windows, 100*s.ShadowRate, 100*s.ServingRate, 100*bound, dc.Shadow.P50, dc.Serving.P50, dc.Shadow.P99, dc.Serving.P99, dc.KS)
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
	// The promotion is the one atomic write of settings.json that moves
	// the model from Shadow to Model: a crash before it leaves the run
	// going (its state file is still there), after it the new model serves
	// at the next start and the run's leftover state file is removed then
	// (cleanShadowLeftovers).
	failpoint("promote:before-settings")
	if err := d.settings.update(stream, func(s *streamSettings) {
		s.Previous, s.Model, s.ModelAt = s.Model, s.Shadow, time.Now().UTC()
		s.Shadow, s.ShadowAt = "", time.Time{}
	}); err != nil {
		return "", err
	}
	failpoint("promote:after-settings")
	if err := d.rebuildNow(ctx); err != nil {
		d.settings.update(stream, func(s *streamSettings) { *s = before })
		return "", fmt.Errorf("stream %s: promotion of %s failed: %w", stream, before.Shadow, err)
	}
	failpoint("promote:after-rebuild")
	d.forgetShadow(stream)
	failpoint("promote:after-forget")
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
	failpoint("rollback:before-settings")
	if err := d.settings.update(stream, func(s *streamSettings) { s.Shadow, s.ShadowAt = "", time.Time{} }); err != nil {
		return "", err
	}
	failpoint("rollback:after-settings")
	if err := d.rebuildNow(ctx); err != nil {
		return "", fmt.Errorf("stream %s: %w", stream, err)
	}
	failpoint("rollback:after-rebuild")
	d.forgetShadow(stream)
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
	return &tee{Model: spec.Model, shadow: sm, thServing: th, thSh: thSh, run: run, d: d, device: cfg.DeviceID, cfg: cfg.Models.Shadow}, m, nil
}
