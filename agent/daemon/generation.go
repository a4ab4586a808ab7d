package daemon

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/vigil-edge/vigil/agent/config"
	"github.com/vigil-edge/vigil/agent/detect"
	"github.com/vigil-edge/vigil/agent/internal/pipemodel"
	"github.com/vigil-edge/vigil/agent/pipeline"
	"github.com/vigil-edge/vigil/agent/source"
	"github.com/vigil-edge/vigil/agent/stream"
	"github.com/vigil-edge/vigil/inference"
	"github.com/vigil-edge/vigil/models"
	"github.com/vigil-edge/vigil/models/train"
)

// generation is one configuration's data plane: its models, its pipeline and
// its sources. A reload builds a new generation and stops the old one.
type generation struct {
	pipe    *pipeline.Pipeline
	sources []part
	events  http.Handler
	models  []*models.Model
	done    chan error

	cancel  context.CancelFunc
	wg      sync.WaitGroup
	stopped sync.Once
}

// part is one supervised source of a generation.
type part struct {
	name   string // source/NAME
	run    func(ctx context.Context) error
	policy restartPolicy
	// connected, for a source with a broker connection (mqtt), reports
	// whether it is connected and subscribed; nil for the others.
	connected func() bool
}

// newGeneration loads the models and builds the pipeline and sources of cfg.
// Nothing runs until start.
func (d *Daemon) newGeneration(cfg *config.Config) (_ *generation, err error) {
	g := &generation{done: make(chan error, 1)}
	defer func() {
		if err != nil {
			g.close()
		}
	}()
	iopts := inference.DefaultOptions()
	iopts.Workers = cfg.Inference.WorkerCount()
	iopts.Threads = cfg.Inference.Threads
	iopts.XNNPACK = cfg.Inference.XNNPACK
	learnDir := filepath.Join(cfg.DataDir, "learned")

	var specs []pipeline.StreamSpec
	for i, sc := range cfg.Streams {
		spec := pipeline.StreamSpec{
			Name: sc.Name, Source: sc.Source, Kind: sc.Kind, Key: sc.Key,
			Threshold: sc.Threshold, TopFeatures: sc.TopFeatures, MaxLateness: sc.MaxLateness,
			Channels: sc.Channels, StuckFactor: sc.StuckFactor, ShiftFactor: sc.ShiftFactor,
			Detect: detect.Options{K: sc.Hysteresis.K, N: sc.Hysteresis.N, Cooldown: sc.Cooldown, CloseAfter: sc.Episode.CloseAfter,
				Bands: detect.Bands{Warning: sc.Severity.Warning, Major: sc.Severity.Major, Critical: sc.Severity.Critical}},
		}
		path := filepath.Join(cfg.ModelsDir, sc.Model)
		over := d.settings.get(sc.Name) // what commands changed (settings.go)
		if over.Threshold > 0 {
			spec.Threshold = over.Threshold
		}
		learn := sc.Learn.Samples
		if over.LearnSamples > 0 {
			learn = over.LearnSamples
		}
		if over.Model != "" {
			// A deployed model (deploy.go) serves instead of learning.
			name, _, _ := strings.Cut(over.Model, "@")
			path, learn = filepath.Join(cfg.DataDir, "models", over.Model, name), 0
		}
		if learn > 0 {
			// A model this device learnt before is used again after a restart.
			if _, err := os.Stat(filepath.Join(learnDir, sc.Name+".json")); err == nil {
				path = filepath.Join(learnDir, sc.Name)
			} else {
				spec.Learn = learn
				path = ""
			}
		}
		if path != "" {
			m, err := models.Load(path, iopts)
			if err != nil {
				return nil, fmt.Errorf("streams[%d] %s: model %s: %w", i, sc.Name, sc.Model, err)
			}
			g.models = append(g.models, m)
			if err := fits(sc, m.Manifest()); err != nil {
				return nil, fmt.Errorf("streams[%d] %s: %w", i, sc.Name, err)
			}
			spec.Model = pipemodel.Adapt(m)
			if over.Shadow != "" {
				if t, sm, err := d.shadowTee(cfg, sc, spec, over); err != nil {
					d.log.Warn("shadow model not run", "stream", sc.Name, "model", over.Shadow, "err", err)
				} else {
					g.models = append(g.models, sm)
					spec.Model = t
				}
			}
			if sc.Kind == config.KindBehaviour {
				feats := m.Manifest().Features
				if _, err := stream.NewBehaviour(feats); err != nil {
					return nil, fmt.Errorf("streams[%d] %s: model %s: %w", i, sc.Name, sc.Model, err)
				}
				spec.Features = func() pipeline.Featurizer {
					b, _ := stream.NewBehaviour(feats)
					return b
				}
			}
		} else if len(spec.Channels) == 0 {
			// Learning from the stream itself: channels come from the manifest
			// named by the stream (if any) or from the first sample.
			if man, err := readManifest(filepath.Join(cfg.ModelsDir, sc.Model)); err == nil {
				spec.Channels = man.Input.Channels
			}
		}
		specs = append(specs, spec)
	}
	pipe, err := pipeline.New(pipeline.Options{
		Device: cfg.DeviceID, Streams: specs, Buffer: d.appender(), Logger: d.log,
		MaxBatch: cfg.Inference.MaxBatch,
		Learner:  d.learner(cfg, learnDir, iopts),
	})
	if err != nil {
		return nil, err
	}
	g.pipe = pipe
	if err := d.buildSources(cfg, g); err != nil {
		return nil, err
	}
	return g, nil
}

// fits checks a stream's configuration against its model's manifest.
func fits(sc config.Stream, m *models.Manifest) error {
	if m.Kind != sc.Kind {
		return fmt.Errorf("model %s@%s is a %s model, the stream is %s", m.Name, m.Version, m.Kind, sc.Kind)
	}
	if len(sc.Channels) > 0 && !slices.Equal(sc.Channels, m.Input.Channels) {
		return fmt.Errorf("channels %v differ from model %s@%s's input.channels %v", sc.Channels, m.Name, m.Version, m.Input.Channels)
	}
	if m.Output.Kind != models.OutputReconstruction && sc.TopFeatures > 0 {
		return nil // a score model names no channels; alerts carry none
	}
	return nil
}

// readManifest reads the manifest of the model at path (models_dir/NAME)
// alone: a stream that learns may name a model whose .tflite is not there
// (config validation allows it), for the window, hop and channels of what
// it learns.
func readManifest(path string) (*models.Manifest, error) {
	b, err := os.ReadFile(path + ".json")
	if err != nil {
		return nil, err
	}
	m, err := models.DecodeManifest(b)
	if err != nil {
		return nil, fmt.Errorf("%s.json: %w", path, err)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("%s.json: %w", path, err)
	}
	return m, nil
}

// learner trains a stream's model on the device, saves it under
// data_dir/learned so a restart reuses it, and loads it.
func (d *Daemon) learner(cfg *config.Config, dir string, iopts inference.Options) pipeline.Learner {
	return func(ctx context.Context, name string, channels []string, samples [][]float64) (pipeline.Model, error) {
		sc := cfg.Stream(name)
		if sc == nil {
			return nil, fmt.Errorf("unknown stream %q", name)
		}
		opts := train.DefaultOptions()
		opts.Name, opts.Version = name, "learned-"+time.Now().UTC().Format("20060102T150405")
		opts.Description = fmt.Sprintf("learnt on device %s from the first %d samples of stream %s", cfg.DeviceID, len(samples), name)
		opts.Channels = channels
		opts.Budget = sc.Learn.Budget
		opts.DriftHorizon = sc.Learn.DriftHorizon
		opts.Calibration.Factor = sc.Learn.ThresholdFactor
		opts.Calibration.On = sc.Learn.CalibrateOn
		opts.Quantize = sc.Learn.Quantize
		opts.Source = "stream " + name
		if sc.Learn.Arch != "" {
			opts.Arch = train.Arch(sc.Learn.Arch)
		}
		if base, err := readManifest(filepath.Join(cfg.ModelsDir, sc.Model)); err == nil {
			opts.Window, opts.Hop = base.Input.Window, base.Input.Hop
		} else {
			d.log.Warn("learning with the default window and hop: the stream's model manifest is unreadable",
				"stream", name, "window", opts.Window, "hop", opts.Hop, "err", err)
		}
		if opts.Window > len(samples)/2 {
			opts.Window = max(2, len(samples)/4)
		}
		opts.Workers, opts.Threads = iopts.Workers, iopts.Threads
		log := d.log.With("component", "learn", "stream", name)
		last := time.Time{}
		opts.Progress = func(p train.Progress) {
			if time.Since(last) > 2*time.Second {
				last = time.Now()
				log.Info("training", "epoch", p.Epoch, "loss", p.Loss, "val_loss", p.ValLoss)
			}
		}
		res, err := train.Train(ctx, samples, opts)
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("learned models: %w", err)
		}
		if err := res.Save(dir); err != nil {
			return nil, err
		}
		m, err := models.Load(filepath.Join(dir, name), iopts)
		if err != nil {
			return nil, err
		}
		th := m.Threshold()
		if res.Report.StoppedBy == "budget" {
			log.Warn("training stopped by learn.budget: the model is the best of the epochs that fit in it, not what training to the end gives (vigil eval); raise learn.budget",
				"budget", opts.Budget, "epochs", res.Report.Epochs)
		}
		log.Info("learnt the stream's baseline", "model", name+"@"+opts.Version, "threshold", th,
			"epochs", res.Report.Epochs, "stopped_by", res.Report.StoppedBy, "finite", !math.IsNaN(th))
		return pipemodel.Adapt(m), nil
	}
}

// start runs the pipeline and the sources under sup.
func (g *generation) start(ctx context.Context, sup *supervisor) {
	ctx, g.cancel = context.WithCancel(ctx)
	pctx, cancelPipe := context.WithCancel(context.WithoutCancel(ctx))
	run := sup.wrap("pipeline", g.pipe.Run)
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		defer cancelPipe()
		err := run(pctx)
		if err != nil {
			err = fmt.Errorf("pipeline: %w", err)
		}
		select {
		case g.done <- err:
		default:
		}
	}()
	var srcs sync.WaitGroup
	for _, s := range g.sources {
		srcs.Go(func() {
			if err := sup.keep(ctx, s.name, s.run, s.policy); err != nil {
				select {
				case g.done <- fmt.Errorf("%s: %w", s.name, err):
				default:
				}
			}
		})
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		srcs.Wait()
		// Sources are done (stopped, or a replay reached its end): let the
		// pipeline drain what they put in.
		g.pipe.CloseInput()
	}()
}

// stop stops the sources, lets the pipeline drain into the buffer, and
// closes the models.
func (g *generation) stop() {
	g.stopped.Do(func() {
		if g.cancel != nil {
			g.cancel()
		}
		if g.pipe != nil {
			g.pipe.StopLearning() // a stop does not wait for a stream's training; a source that ends does
		}
		g.wg.Wait()
		g.close()
	})
}

func (g *generation) close() {
	for _, m := range g.models {
		m.Close()
	}
	g.models = nil
}

var _ source.Sink = (*pipeline.Pipeline)(nil)
