package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/termsafe"
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
			esc := termsafe.String // a user id may hold a newline or an escape sequence
			fmt.Fprintf(d.stdout, "%s ALERT %-8s %-9s %s%s score %.3g (%.1fx threshold) episode %s update %d [%s]\n",
				a.TS.Format("15:04:05"), esc(strings.ToUpper(a.Severity)), esc(a.State), esc(a.Stream), esc(key), a.Score, a.Score/a.Threshold,
				esc(a.Episode), a.Update, esc(strings.Join(feats, ", ")))
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

// startWatchdog pings systemd's watchdog at half its interval while Vigil
// runs (WATCHDOG_USEC is set by WatchdogSec=). It returns a stop function.
func startWatchdog(ctx context.Context) func() {
	usec := os.Getenv("WATCHDOG_USEC")
	var n int64
	if _, err := fmt.Sscan(usec, &n); err != nil || n <= 0 {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		t := time.NewTicker(time.Duration(n) * time.Microsecond / 2)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				notifySystemd("WATCHDOG=1")
			case <-ctx.Done():
				return
			}
		}
	}()
	return cancel
}
