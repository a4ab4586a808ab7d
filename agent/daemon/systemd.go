package daemon

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"
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
