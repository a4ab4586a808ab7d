package daemon

import (
	"context"
	"path/filepath"
	"time"

	"github.com/vigil-edge/vigil/agent/episodes"
	"github.com/vigil-edge/vigil/agent/record"
)

// closeOrphanEpisodes opens the episode ledger and closes the episodes the
// last run left open (see package episodes). Without a ledger (the data
// directory cannot hold one) the daemon runs on, and says so.
func (d *Daemon) closeOrphanEpisodes(ctx context.Context) {
	led, err := episodes.Open(filepath.Join(d.cfg.DataDir, "episodes.jsonl"), d.log.With("component", "episodes"))
	if err != nil {
		d.log.Error("no episode ledger: a restart will leave open episodes open", "err", err)
		return
	}
	d.episodes = led
	closes := led.Orphans(time.Now())
	if len(closes) == 0 {
		return
	}
	if _, err := d.appender().Append(ctx, record.LaneAlert, closes...); err != nil {
		d.log.Error("closing the episodes the last run left open failed; the next start tries again", "episodes", len(closes), "err", err)
		return
	}
	d.log.Info("closed the episodes the last run left open", "episodes", len(closes))
}
