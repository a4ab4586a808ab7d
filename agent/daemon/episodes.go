package daemon

import (
	"context"
	"path/filepath"
	"time"

	"github.com/vigil-edge/vigil/agent/config"
	"github.com/vigil-edge/vigil/agent/episodes"
	"github.com/vigil-edge/vigil/agent/record"
)

// openEpisodeLedger opens the ledger of open episodes (see package
// episodes): the episodes the last run left open are closed as their
// streams move past them, or now if their stream is gone from the config.
// Without a ledger (the data directory cannot hold one) the daemon runs on,
// and says so.
func (d *Daemon) openEpisodeLedger(ctx context.Context) {
	led, err := episodes.Open(filepath.Join(d.cfg.DataDir, "episodes.jsonl"), d.log.With("component", "episodes"), nil)
	if err != nil {
		d.log.Error("no episode ledger: a restart will leave open episodes open", "err", err)
		return
	}
	d.episodes = led
	if n := led.Orphans(); n > 0 {
		d.log.Info("episodes the last run left open: each closes when its stream scores past it", "episodes", n)
	}
	streams := map[string]bool{}
	for _, s := range d.cfg.Streams {
		streams[s.Name] = true
	}
	closes := led.Removed(func(stream string) bool { return streams[stream] })
	if len(closes) == 0 {
		return
	}
	if _, err := d.appender().Append(ctx, record.LaneAlert, closes...); err != nil {
		d.log.Error("closing the open episodes of removed streams failed; the next start tries again", "episodes", len(closes), "err", err)
	}
}

// closeSilentOrphans starts closing, until ctx ends, the episodes the last
// run left open whose stream has scored nothing for its
// episode.orphan_after since the start (episodes.Ledger.Silent); wait
// returns once it has stopped.
func (d *Daemon) closeSilentOrphans(ctx context.Context) (wait func()) {
	if d.episodes == nil || d.episodes.Orphans() == 0 {
		return func() {}
	}
	// The start's config: a reload does not move the waits. A replay
	// scores from its start (its file is there, or vigil does not run), so
	// its orphans are left to it.
	replays := map[string]bool{}
	for _, src := range d.cfg.Sources {
		replays[src.Name] = src.Type == config.SourceReplay
	}
	after := map[string]time.Duration{}
	for _, s := range d.cfg.Streams {
		if !replays[s.Source] {
			after[s.Name] = s.Episode.OrphanAfter
		}
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.silentOrphans(ctx, after)
	}()
	return func() { <-done }
}

func (d *Daemon) silentOrphans(ctx context.Context, after map[string]time.Duration) {
	for {
		closes, next := d.episodes.Silent(func(stream string) time.Duration { return after[stream] })
		if len(closes) > 0 {
			// Not cut short by the stop: a close the buffer took
			// must reach the ledger too.
			if _, err := d.appender().Append(context.WithoutCancel(ctx), record.LaneAlert, closes...); err != nil {
				d.log.Error("closing open episodes of silent streams failed; the next start tries again", "episodes", len(closes), "err", err)
			} else {
				d.log.Info("closed episodes the last run left open: their streams scored nothing since the start", "episodes", len(closes))
			}
		}
		if next <= 0 {
			return
		}
		t := time.NewTimer(next)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
