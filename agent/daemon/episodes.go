package daemon

import (
	"context"
	"path/filepath"

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
