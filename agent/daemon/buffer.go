package daemon

import (
	"log/slog"
	"path/filepath"

	"github.com/vigil-edge/vigil/agent/config"
	"github.com/vigil-edge/vigil/agent/forward"
	"github.com/vigil-edge/vigil/agent/forward/dify"
	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/buffer"
)

// openBuffer opens the buffer the config describes.
func openBuffer(cfg *config.Config, log *slog.Logger) (buffer.Buffer, error) {
	opts := buffer.DefaultOptions()
	opts.MaxBytes = int64(cfg.Buffer.MaxBytes)
	opts.MaxRecordBytes = int(cfg.Buffer.MaxRecordBytes)
	if cfg.Buffer.SyncInterval > 0 {
		opts.FlushInterval = cfg.Buffer.SyncInterval
	}
	opts.Logger = log.With("component", "buffer")
	for _, l := range []struct {
		name string
		c    config.Lane
	}{{record.LaneScore, cfg.Buffer.Lanes.Score}, {record.LaneAlert, cfg.Buffer.Lanes.Alert}, {record.LaneAdvice, cfg.Buffer.Lanes.Advice},
		// What a model in its shadow run scored (shadow.go): as durable
		// as the scores, and evicted like them.
		{record.LaneShadow, config.Lane{Priority: cfg.Buffer.Lanes.Score.Priority, Durability: cfg.Buffer.Lanes.Score.Durability,
			MaxBytes: cfg.Buffer.Lanes.Score.MaxBytes, TTL: cfg.Buffer.Lanes.Score.TTL, OnFull: "evict"}},
		// Records a forwarder gave up on, with the reason; and the Dify
		// forwarder's journal of runs started (see agent/forward/dify).
		{forward.LaneDeadLetter, config.Lane{Priority: 1, Durability: "sync", OnFull: "evict"}},
		{dify.LaneJournal, config.Lane{Priority: 3, Durability: "sync", OnFull: "evict"}}} {
		lo := buffer.LaneOptions{Name: l.name, Priority: l.c.Priority, MaxBytes: int64(l.c.MaxBytes), TTL: l.c.TTL}
		if l.c.Durability == "sync" {
			lo.Durability = buffer.Sync
		} else {
			lo.Durability = buffer.Batched
		}
		if l.c.OnFull == "reject" {
			lo.OnFull = buffer.Reject
		} else {
			lo.OnFull = buffer.Evict
		}
		opts.Lanes = append(opts.Lanes, lo)
	}
	if cfg.Buffer.Kind == "memory" {
		b, err := buffer.NewMemory(opts)
		if err != nil {
			return nil, err // it says "buffer: ..."
		}
		return b, nil
	}
	bo := buffer.DefaultBadgerOptions(filepath.Join(cfg.DataDir, "buffer"))
	bo.Options = opts
	bo.MemoryBudget = int64(cfg.Buffer.MemoryBudget)
	if cfg.Buffer.GCInterval > 0 {
		bo.GCInterval = cfg.Buffer.GCInterval
	}
	b, err := buffer.OpenBadger(bo)
	if err != nil {
		return nil, err // it says "open buffer <dir>: ..."
	}
	return b, nil
}
