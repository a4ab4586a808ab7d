package daemon

import (
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/vigil-edge/vigil/agent/config"
	"github.com/vigil-edge/vigil/inference"
	"github.com/vigil-edge/vigil/models"
)

// Check reports what `vigil run` would find wrong in cfg beyond what
// config.Validate sees: every model it names is loaded and checked against
// its stream, then the models, pipeline and sources are built over an
// in-memory buffer without starting anything, so that an option only the
// sources check is reported too. It is `vigil check-config`'s second half.
func Check(cfg *config.Config) config.Problems {
	if ps := checkModels(cfg); len(ps) > 0 {
		return ps
	}
	return checkGeneration(cfg)
}

// checkModels loads every model a config names and reports what does not fit,
// for `vigil check-config`.
func checkModels(cfg *config.Config) config.Problems {
	var ps config.Problems
	for i, sc := range cfg.Streams {
		path := filepath.Join(cfg.ModelsDir, sc.Model)
		key := fmt.Sprintf("streams[%d].model", i)
		if sc.Learn.Samples > 0 {
			continue // learnt on the device
		}
		m, err := models.Load(path, inference.Options{Workers: 1})
		if err != nil {
			ps = append(ps, config.Problem{Path: key, Msg: err.Error()})
			continue
		}
		if err := fits(sc, m.Manifest()); err != nil {
			ps = append(ps, config.Problem{Path: key, Msg: err.Error()})
		}
		m.Close()
	}
	return ps
}

// checkGeneration builds a generation of cfg over an in-memory buffer.
func checkGeneration(cfg *config.Config) config.Problems {
	c := *cfg
	c.Buffer.Kind = "memory"
	log := slog.New(slog.DiscardHandler)
	buf, err := openBuffer(&c, log)
	if err != nil {
		return config.Problems{{Path: "buffer", Msg: err.Error()}}
	}
	defer buf.Close()
	d, err := New(&c, Options{Logger: log})
	if err != nil {
		return config.Problems{{Msg: err.Error()}}
	}
	d.buf = buf
	g, err := d.newGeneration(&c)
	if err != nil {
		return config.Problems{{Msg: err.Error()}}
	}
	g.close()
	return nil
}
