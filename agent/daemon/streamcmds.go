package daemon

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/vigil-edge/vigil/agent/config"
	"github.com/vigil-edge/vigil/agent/fleet"
	"github.com/vigil-edge/vigil/agent/internal/fsx"
	"github.com/vigil-edge/vigil/agent/publish"
)

// Command names of the commands beyond the publisher's own.
const (
	cmdPromote  = "promote"
	cmdRelearn  = "relearn"
	cmdReset    = "reset"
	cmdRollback = "rollback"
)

// handlers are the daemon's commands beyond publish.CommandNames.
func (d *Daemon) handlers() map[string]publish.CommandHandler {
	return map[string]publish.CommandHandler{
		cmdRelearn: func(ctx context.Context, payload []byte) publish.Reply {
			r, err := fleet.DecodeRelearn(payload)
			if err != nil {
				return publish.Reply{ID: fleet.RequestID(payload), Message: "invalid relearn command: " + err.Error()}
			}
			return reply(r.ID)(d.relearn(ctx, r.Stream, r.Samples))
		},
		cmdDeploy: d.deploy.handle,
		cmdPromote: func(ctx context.Context, payload []byte) publish.Reply {
			r, err := fleet.DecodeReset(payload) // the same fields: id, stream
			if err != nil {
				return publish.Reply{ID: fleet.RequestID(payload), Message: "invalid promote command: " + err.Error()}
			}
			return reply(r.ID)(d.promote(ctx, r.Stream, "by command"))
		},
		cmdRollback: func(ctx context.Context, payload []byte) publish.Reply {
			r, err := fleet.DecodeReset(payload) // the same fields: id, stream
			if err != nil {
				return publish.Reply{ID: fleet.RequestID(payload), Message: "invalid rollback command: " + err.Error()}
			}
			return reply(r.ID)(d.rollback(ctx, r.Stream))
		},
		cmdReset: func(ctx context.Context, payload []byte) publish.Reply {
			r, err := fleet.DecodeReset(payload)
			if err != nil {
				return publish.Reply{ID: fleet.RequestID(payload), Message: "invalid reset command: " + err.Error()}
			}
			return reply(r.ID)(d.reset(ctx, r.Stream))
		},
	}
}

func reply(id string) func(string, error) publish.Reply {
	return func(msg string, err error) publish.Reply {
		if err != nil {
			return publish.Reply{ID: id, Message: err.Error()}
		}
		return publish.Reply{ID: id, OK: true, Message: msg}
	}
}

// openSettings loads data_dir/settings.json. One that cannot be read or
// decoded is moved aside (and logged): the device runs on its config's
// values rather than not at all.
func (d *Daemon) openSettings(dataDir string) *settingsStore {
	cleanLandings(filepath.Join(dataDir, "models"))
	d.auth = loadCmdAuth(d, dataDir)
	s, err := loadSettings(dataDir)
	if err == nil {
		return s
	}
	path := filepath.Join(dataDir, settingsFile)
	aside := path + ".bad-" + time.Now().UTC().Format("20060102T150405")
	if rerr := os.Rename(path, aside); rerr != nil {
		d.log.Error("settings unreadable and cannot be moved aside", "err", err, "rename_err", rerr)
	} else {
		d.log.Error("settings unreadable: moved aside; streams run on the config's values", "err", err, "moved_to", aside)
	}
	return &settingsStore{path: path, streams: map[string]streamSettings{}}
}

// setThreshold applies a threshold to the running pipeline and stores it.
func (d *Daemon) setThreshold(ctx context.Context, stream string, threshold float64) (string, error) {
	was := d.current().pipe.Stats().Streams[stream].Threshold
	if err := d.current().pipe.SetThreshold(ctx, stream, threshold); err != nil {
		return "", err
	}
	if err := d.settings.update(stream, func(s *streamSettings) {
		s.Threshold, s.ThresholdAt = threshold, time.Now().UTC()
	}); err != nil {
		return "", fmt.Errorf("stream %s: threshold %g applied but not stored (a reload or restart will undo it): %w", stream, threshold, err)
	}
	return fmt.Sprintf("stream %s: threshold %g (was %g; stored: `reset` returns to the config's)", stream, threshold, was), nil
}

// relearn starts a new learning period for a stream: its learnt model (if
// any) moves to learned/previous/, a threshold set by command is dropped,
// and the stream is rebuilt to learn from its next samples.
func (d *Daemon) relearn(ctx context.Context, stream string, samples int) (string, error) {
	sc := d.config().Stream(stream)
	if sc == nil {
		return "", fmt.Errorf("unknown stream %q", stream)
	}
	if sc.Kind == config.KindBehaviour {
		return "", fmt.Errorf("stream %s is a behaviour stream, which cannot learn on the device", stream)
	}
	if samples == 0 {
		samples = d.settings.get(stream).LearnSamples
	}
	if samples == 0 {
		samples = sc.Learn.Samples
	}
	if samples == 0 {
		return "", fmt.Errorf("stream %s has no learn.samples in the config: give \"samples\"", stream)
	}
	if err := d.settings.update(stream, func(s *streamSettings) {
		s.Threshold, s.ThresholdAt = 0, time.Time{}
		s.LearnSamples, s.RelearnAt = samples, time.Now().UTC()
	}); err != nil {
		return "", fmt.Errorf("stream %s: relearn not stored: %w", stream, err)
	}
	moved, err := setAsideLearnt(d.config().DataDir, stream)
	if err != nil {
		return "", fmt.Errorf("stream %s: %w", stream, err)
	}
	if err := d.rebuildNow(ctx); err != nil {
		return "", fmt.Errorf("stream %s: relearn stored, but the pipeline was not rebuilt: %w", stream, err)
	}
	msg := fmt.Sprintf("stream %s: learning anew from its next %d samples", stream, samples)
	if moved != "" {
		msg += "; the previous learnt model is kept in " + moved
	}
	return msg, nil
}

// reset returns a stream to the config's values: the settings commands
// gave it are forgotten and the stream is rebuilt.
func (d *Daemon) reset(ctx context.Context, stream string) (string, error) {
	if d.config().Stream(stream) == nil {
		return "", fmt.Errorf("unknown stream %q", stream)
	}
	if d.settings.get(stream).zero() {
		return fmt.Sprintf("stream %s: already on the config's values", stream), nil
	}
	if err := d.settings.update(stream, func(s *streamSettings) { *s = streamSettings{} }); err != nil {
		return "", fmt.Errorf("stream %s: reset not stored: %w", stream, err)
	}
	if err := d.rebuildNow(ctx); err != nil {
		return "", fmt.Errorf("stream %s: reset stored, but the pipeline was not rebuilt: %w", stream, err)
	}
	e := d.effective()[stream]
	return fmt.Sprintf("stream %s: back to the config's values (model %s from %s, threshold %g from %s)",
		stream, orNone(e.Model), e.ModelFrom, e.Threshold, e.ThresholdFrom), nil
}

// rollback makes a stream serve the model its last deployment replaced
// (the config's, or an earlier deployed one, still on disk).
func (d *Daemon) rollback(ctx context.Context, stream string) (string, error) {
	if d.config().Stream(stream) == nil {
		return "", fmt.Errorf("unknown stream %q", stream)
	}
	before := d.settings.get(stream)
	if before.Shadow != "" {
		return d.dropShadow(ctx, stream, "by command")
	}
	if before.Model == "" {
		return "", fmt.Errorf("stream %s serves no deployed model: nothing to roll back", stream)
	}
	if err := d.settings.update(stream, func(s *streamSettings) {
		s.Model, s.Previous, s.ModelAt = before.Previous, "", time.Now().UTC()
		if s.Model == "" {
			s.ModelAt = time.Time{}
		}
	}); err != nil {
		return "", fmt.Errorf("stream %s: rollback not stored: %w", stream, err)
	}
	if err := d.rebuildNow(ctx); err != nil {
		if uerr := d.settings.update(stream, func(s *streamSettings) { *s = before }); uerr != nil {
			d.log.Error("rollback: restoring the settings", "stream", stream, "err", uerr)
		}
		return "", fmt.Errorf("stream %s: rollback failed, %s keeps serving: %w", stream, before.Model, err)
	}
	e := d.effective()[stream]
	return fmt.Sprintf("stream %s: rolled back from %s to %s (%s)", stream, before.Model, orNone(e.Model), e.ModelFrom), nil
}

func orNone(s string) string {
	if s == "" {
		return "(learning)"
	}
	return s
}

// setAsideLearnt moves a stream's learnt model files to
// data_dir/learned/previous/, replacing an older one there; it returns the
// directory, or "" when there was nothing to move.
func setAsideLearnt(dataDir, stream string) (string, error) {
	dir := filepath.Join(dataDir, "learned")
	prev := filepath.Join(dir, "previous")
	moved := ""
	// The manifest last: without it the model is not used.
	for _, ext := range []string{".json", ".tflite"} {
		src := filepath.Join(dir, stream+ext)
		if _, err := os.Stat(src); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err := os.MkdirAll(prev, 0o755); err != nil {
			return "", fmt.Errorf("keep the learnt model: %w", err)
		}
		if err := os.Rename(src, filepath.Join(prev, stream+ext)); err != nil {
			return "", fmt.Errorf("keep the learnt model: %w", err)
		}
		moved = prev
	}
	if moved != "" {
		if err := fsx.SyncDir(dir); err != nil {
			return "", err
		}
	}
	return moved, nil
}

// rebuildNow asks Run to rebuild the generation from the running config
// (settings changed) and waits for the outcome.
func (d *Daemon) rebuildNow(ctx context.Context) error { return ask(ctx, d.rebuildReq) }

// rebuild runs on Run's goroutine.
func (d *Daemon) rebuild(ctx context.Context, reply chan error) {
	err := d.replace(ctx, d.config())
	if err != nil {
		d.log.Error("rebuild after a settings change failed; the previous pipeline keeps running", "err", err)
	}
	reply <- err
}

func (d *Daemon) config() *config.Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg
}

// Effective is a stream's model and threshold in force, and where each
// came from: "config", "learnt", "command" or "deployment".
type Effective struct {
	Model         string  `json:"model,omitempty"` // name@version; empty while learning
	ModelFrom     string  `json:"model_from"`
	Threshold     float64 `json:"threshold,omitempty"`
	ThresholdFrom string  `json:"threshold_from"`
	State         string  `json:"state,omitempty"`
	SetAt         string  `json:"set_at,omitempty"` // when a command set the threshold or started a relearn
}

// effective returns every stream's effective settings (health's
// extra.streams, the status command).
func (d *Daemon) effective() map[string]Effective {
	cfg := d.config()
	g := d.current()
	if g == nil {
		return nil
	}
	stats := g.pipe.Stats().Streams
	out := make(map[string]Effective, len(cfg.Streams))
	for _, sc := range cfg.Streams {
		st := stats[sc.Name]
		over := d.settings.get(sc.Name)
		e := Effective{Model: st.Model, Threshold: st.Threshold, State: st.State, ModelFrom: "config", ThresholdFrom: "config"}
		if sc.Learn.Samples > 0 || over.LearnSamples > 0 {
			e.ModelFrom, e.ThresholdFrom = "learnt", "learnt"
			if !over.RelearnAt.IsZero() {
				e.SetAt = over.RelearnAt.Format(time.RFC3339)
			}
		}
		if over.Model != "" {
			e.ModelFrom, e.ThresholdFrom = "deployment", "deployment"
			e.SetAt = over.ModelAt.Format(time.RFC3339)
		}
		if sc.Threshold > 0 {
			e.ThresholdFrom = "config"
		}
		if over.Threshold > 0 {
			e.ThresholdFrom = "command"
			e.SetAt = over.ThresholdAt.Format(time.RFC3339)
		}
		out[sc.Name] = e
	}
	return out
}

// effectiveSummary is effective in one line for the status command.
func (d *Daemon) effectiveSummary() string {
	return summary(d.effective(), ", ", func(n string, e Effective) string {
		return fmt.Sprintf("%s model %s (%s) threshold %g (%s)", n, orNone(e.Model), e.ModelFrom, e.Threshold, e.ThresholdFrom)
	})
}

// summary describes each entry of m with line, in the order of the names,
// and joins the lines with sep.
func summary[V any](m map[string]V, sep string, line func(name string, v V) string) string {
	var parts []string
	for _, n := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, line(n, m[n]))
	}
	return strings.Join(parts, sep)
}
