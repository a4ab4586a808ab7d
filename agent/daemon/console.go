package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/vigil-edge/vigil/agent/internal/termsafe"
	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/buffer"
)

// setupConsumers builds the buffer's consumers the config asks for.
func (d *Daemon) setupConsumers() error {
	if d.opts.PrintAlerts {
		if err := d.addConsumer("console", consumerConsole, []string{record.LaneAlert}, consumer{name: "console", run: d.printAlertsTo}); err != nil {
			return err
		}
	} else if err := d.buf.RemoveConsumer(consumerConsole); err != nil && !errors.Is(err, buffer.ErrUnknownConsumer) {
		return fmt.Errorf("console: %w", err)
	}
	return d.setupForwarders()
}

// consumerConsole is the buffer consumer of --print-alerts.
const consumerConsole = "console"

// printAlertsTo prints each alert on stdout, one line each. It is a
// consumer of the alert lane, so that an alert stays in the buffer until it
// is printed even when every other consumer acknowledged it already; alerts
// a previous run did not print come first.
func (d *Daemon) printAlertsTo(ctx context.Context) error {
	for {
		wake := d.buf.Notify(record.LaneAlert)
		recs, err := d.buf.Read(consumerConsole, record.LaneAlert, 256)
		if err != nil {
			return err
		}
		seqs := make([]uint64, 0, len(recs))
		for _, r := range recs {
			seqs = append(seqs, r.Seq)
			var a record.Alert
			if json.Unmarshal(r.Data, &a) != nil {
				continue
			}
			var feats []string
			for _, f := range a.TopFeatures {
				feats = append(feats, fmt.Sprintf("%s %.0f%%", f.Name, 100*f.Share))
			}
			key := ""
			if a.Key != "" {
				key = " " + a.Key
			}
			esc := termsafe.String // a user id may hold a newline or an escape sequence
			reason := ""
			if a.Reason != "" {
				reason = " — " + a.Reason
			}
			fmt.Fprintf(d.opts.Stdout, "%s ALERT %-8s %-9s %s%s score %.3g (%.1fx threshold) episode %s update %d [%s]%s\n",
				a.TS.Format("15:04:05"), esc(strings.ToUpper(a.Severity)), esc(a.State), esc(a.Stream), esc(key), a.Score, a.Score/a.Threshold,
				esc(a.Episode), a.Update, esc(strings.Join(feats, ", ")), esc(reason))
		}
		if len(recs) > 0 {
			if err := d.buf.Ack(consumerConsole, record.LaneAlert, seqs...); err != nil {
				return err
			}
			continue
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return nil
		}
	}
}
