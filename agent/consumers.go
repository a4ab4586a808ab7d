package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/buffer"
)

// setupConsumers builds the buffer's consumers the config asks for.
func (d *daemon) setupConsumers(ctx context.Context) error {
	if d.printAlerts {
		if err := d.buf.RegisterConsumer(consumerConsole, record.LaneAlert); err != nil {
			return fmt.Errorf("console: %w", err)
		}
		d.consumers = append(d.consumers, consumer{name: "console", run: d.printAlertsTo})
	} else if err := d.buf.RemoveConsumer(consumerConsole); err != nil && !errors.Is(err, buffer.ErrUnknownConsumer) {
		return fmt.Errorf("console: %w", err)
	}
	return d.setupForwarders(ctx)
}

// consumerConsole is the buffer consumer of --print-alerts.
const consumerConsole = "console"

// printAlertsTo prints each alert on stdout, one line each. It is a
// consumer of the alert lane, so that an alert stays in the buffer until it
// is printed even when every other consumer acknowledged it already; alerts
// a previous run did not print come first.
func (d *daemon) printAlertsTo(ctx context.Context) error {
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
			fmt.Fprintf(d.stdout, "%s ALERT %-8s %-9s %s%s score %.3g (%.1fx threshold) episode %s update %d [%s]\n",
				a.TS.Format("15:04:05"), strings.ToUpper(a.Severity), a.State, a.Stream, key, a.Score, a.Score/a.Threshold,
				a.Episode, a.Update, strings.Join(feats, ", "))
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

// notifySystemd sends a state line to systemd's notify socket, if Vigil runs
// under systemd with Type=notify (NOTIFY_SOCKET is set); otherwise nothing.
func notifySystemd(state string) {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return
	}
	if addr[0] == '@' {
		addr = "\x00" + addr[1:]
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return
	}
	defer c.Close()
	c.Write([]byte(state))
}
