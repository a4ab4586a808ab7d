package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"github.com/vigil-edge/vigil/agent/record"
)

// setupConsumers builds the buffer's consumers the config asks for.
func (d *daemon) setupConsumers(ctx context.Context) error {
	if d.printAlerts {
		d.consumers = append(d.consumers, consumer{name: "console", run: d.printAlertsTo})
	}
	return d.setupForwarders(ctx)
}

// printAlertsTo follows the alert lane and prints each new alert on stdout,
// one line each. It does not acknowledge anything: it is a viewer, not a
// consumer that records leave the buffer for.
func (d *daemon) printAlertsTo(ctx context.Context) error {
	next := d.buf.LastSeq(record.LaneAlert) + 1
	for {
		wake := d.buf.Notify(record.LaneAlert)
		recs, err := d.buf.ReadFrom(record.LaneAlert, next, 256)
		if err != nil {
			return err
		}
		for _, r := range recs {
			next = r.Seq + 1
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
