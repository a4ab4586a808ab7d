package cli

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/vigil-edge/vigil/agent/watch"
)

// Watch is `vigil watch`: it shows every device under a topic prefix live:
// online or offline, rates, backlog, drops, last alerts, learning state; --json prints one JSON
// line per update instead.
func Watch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := NewFlags("watch", stderr)
	o := watch.DefaultOptions()
	fs.StringVar(&o.Broker, "broker", os.Getenv("VIGIL_MQTT_BROKER"), "broker URL, e.g. tcp://127.0.0.1:1883, or a cluster's nodes separated by commas (or VIGIL_MQTT_BROKER)")
	fs.StringVar(&o.Prefix, "prefix", o.Prefix, "topic prefix")
	fs.BoolVar(&o.JSON, "json", false, "print one JSON line per update instead of the live view")
	fs.StringVar(&o.Username, "username", "", "broker user name")
	passwordFile := fs.String("password-file", "", "file holding the broker password (or VIGIL_MQTT_PASSWORD)")
	fs.StringVar(&o.TLS.CAFile, "ca-file", "", "PEM CA file for a TLS broker")
	fs.StringVar(&o.TLS.CertFile, "cert-file", "", "PEM client certificate for mutual TLS")
	fs.StringVar(&o.TLS.KeyFile, "key-file", "", "PEM client key for mutual TLS")
	mode := fs.String("mode", string(o.Mode), "layout: auto (one line per device above a handful, or when the detail does not fit), compact or detail")
	fs.StringVar(&o.Filter.Devices, "devices", "", "show only devices whose id matches this shell pattern, e.g. 'pump-*'")
	states := fs.String("state", "", "show only devices in these states: online, stale, offline (comma-separated)")
	fs.DurationVar(&o.StaleAfter, "stale-after", o.StaleAfter, "an online device silent this long is shown as stale")
	if err := ParseFlags(fs, args); err != nil {
		return err
	}
	o.Mode = watch.Mode(*mode)
	if *states != "" {
		o.Filter.States = strings.Split(*states, ",")
	}
	if fd := int(os.Stdout.Fd()); !o.JSON && watch.IsTerminal(fd) {
		o.Size = watch.TerminalSize(fd)
		if in := int(os.Stdin.Fd()); watch.IsTerminal(in) {
			if restore, err := watch.KeysMode(in); err == nil {
				defer restore()
				o.Keys = os.Stdin
			}
		}
	}
	o.Password = os.Getenv("VIGIL_MQTT_PASSWORD")
	if *passwordFile != "" {
		b, err := os.ReadFile(*passwordFile)
		if err != nil {
			return fmt.Errorf("watch: password file: %w", err)
		}
		o.Password = string(trimNewline(b))
	}
	o.Out = stdout
	o.Logger = slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return watch.Watch(ctx, o)
}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
