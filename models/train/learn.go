//go:build cgo

package train

import (
	"context"
	"fmt"

	"github.com/vigil-edge/vigil/inference"
	"github.com/vigil-edge/vigil/models"
)

// Learn is the on-device warm-up: it trains on samples (the first rows of a
// stream, rows × channels, all assumed normal), calibrates, exports and
// loads the model through TFLite, in-process, and returns it ready to
// score. Set opts.Budget to bound the training time: when it is spent, the
// best weights so far are used. opts.Workers and opts.Threads size the
// model's interpreter pool (default 1 each). Errors are those of Train, or
// of loading the exported model.
func Learn(ctx context.Context, samples [][]float64, opts Options) (*models.Model, *Report, error) {
	res, err := Train(ctx, samples, opts)
	if err != nil {
		return nil, nil, err
	}
	io := inference.Options{Workers: max(opts.Workers, 1), Threads: max(opts.Threads, 1)}
	s, err := inference.Load(res.TFLite, io)
	if err != nil {
		return nil, nil, fmt.Errorf("learn: load the trained model: %w", err)
	}
	md, err := models.New(res.Manifest, s)
	if err != nil {
		s.Close()
		return nil, nil, fmt.Errorf("learn: %w", err)
	}
	return md, res.Report, nil
}
