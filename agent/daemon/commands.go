package daemon

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/vigil-edge/vigil/agent/publish"
)

// remoteCommands carries out the MQTT remote commands on the daemon.
type remoteCommands struct{ d *Daemon }

func (c remoteCommands) Reload(ctx context.Context) (string, error) {
	if err := c.d.Reload(ctx); err != nil {
		return "", err
	}
	return "reloaded config and models", nil
}

func (c remoteCommands) SetThreshold(ctx context.Context, stream string, threshold float64) (string, error) {
	return c.d.setThreshold(ctx, stream, threshold)
}

func (c remoteCommands) Flush(ctx context.Context) (string, error) {
	return c.d.flush(ctx)
}

func (c remoteCommands) Status(ctx context.Context) (string, error) {
	s := c.d.reporter.Snapshot()
	var streams []string
	for name, state := range s.Learning {
		streams = append(streams, name+" "+state)
	}
	sort.Strings(streams)
	msg := fmt.Sprintf("up %.0fs, %d inputs, %d scores, %d alerts, %d drops; streams: %s",
		s.UptimeS, s.Pipeline.Inputs, s.Pipeline.Scores, s.Pipeline.Alerts, s.Pipeline.DropTotal(), strings.Join(streams, ", "))
	if eff := c.d.effectiveSummary(); eff != "" {
		msg += "; in force: " + eff
	}
	if sh := c.d.shadowSummary(); sh != "" {
		msg += "; shadow: " + sh
	}
	if r := c.d.sup.restartSummary(); len(r) > 0 {
		msg += "; restarted: " + strings.Join(r, ", ")
	}
	return msg, nil
}

var _ publish.Commands = remoteCommands{}
