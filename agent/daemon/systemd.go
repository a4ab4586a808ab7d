package daemon

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/vigil-edge/vigil/agent/health"
)

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

// startWatchdog pings systemd's watchdog at half its interval (WATCHDOG_USEC
// is set by WatchdogSec=) while the pipeline makes progress — the liveness
// probe's check — so that systemd restarts a wedged pipeline. It returns a
// stop function.
func startWatchdog(ctx context.Context, r *health.Reporter, log *slog.Logger) func() {
	usec := os.Getenv("WATCHDOG_USEC")
	var n int64
	if _, err := fmt.Sscan(usec, &n); err != nil || n <= 0 {
		return func() {}
	}
	w := &health.Watchdog{Check: func() error { return firstFailure(r.Live()) }, Notify: notifySystemd, Log: log}
	ctx, cancel := context.WithCancel(ctx)
	t := time.NewTicker(time.Duration(n) * time.Microsecond / 2)
	go func() {
		defer t.Stop()
		w.Run(t.C, ctx.Done())
	}()
	return cancel
}

func firstFailure(cs []health.Check) error {
	for _, c := range cs {
		if !c.OK {
			return fmt.Errorf("%s: %s", c.Name, c.Reason)
		}
	}
	return nil
}
