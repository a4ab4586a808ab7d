package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/vigil-edge/vigil/agent/config"
	"github.com/vigil-edge/vigil/agent/daemon"
)

func envLookup(k string) (string, bool) { return os.LookupEnv(k) }

// runFlags are `vigil run`'s flags; each overrides its config key.
type runFlags struct {
	config      string
	overrides   map[string]*string
	printAlerts bool
}

var flagKeys = []struct{ flag, key, usage string }{
	{"device-id", "device_id", "device id (device_id)"},
	{"data-dir", "data_dir", "data directory (data_dir)"},
	{"models-dir", "models_dir", "models directory (models_dir)"},
	{"mqtt-broker", "mqtt.broker", "MQTT broker URL (mqtt.broker)"},
	{"http-listen", "http.listen", "host:port of the local HTTP server (http.listen)"},
	{"log-level", "log.level", "debug, info, warn or error (log.level)"},
	{"log-format", "log.format", "text or json (log.format)"},
}

// runRun is `vigil run`: it loads the config, builds the daemon and runs it
// until SIGINT or SIGTERM; SIGHUP reloads the config and models.
func runRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("run", stderr)
	f := runFlags{overrides: map[string]*string{}}
	fs.StringVar(&f.config, "config", defaultConfigFile(), "config file (default VIGIL_CONFIG, else "+systemConfig+" if it exists)")
	fs.BoolVar(&f.printAlerts, "print-alerts", false, "print every alert on stdout as it is stored")
	for _, k := range flagKeys {
		f.overrides[k.key] = fs.String(k.flag, "", k.usage)
	}
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	load := func() (*config.Config, error) { return loadConfig(f) }
	cfg, err := load()
	if err != nil {
		return err
	}
	logger, err := newLogger(cfg.Log, stderr)
	if err != nil {
		return err
	}
	d, err := daemon.New(cfg, daemon.Options{Logger: logger, Stdout: stdout, PrintAlerts: f.printAlerts,
		Version: version, ReloadConfig: load})
	if err != nil {
		return err
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		for {
			select {
			case <-hup:
				d.Reload(runCtx) // the daemon logs the outcome
			case <-runCtx.Done():
				return
			}
		}
	}()
	return d.Run(runCtx)
}

// loadConfig applies defaults, the file, VIGIL_* and flags, then validates.
func loadConfig(f runFlags) (*config.Config, error) {
	var cfg *config.Config
	var err error
	if f.config != "" {
		cfg, err = config.Load(f.config, envLookup)
	} else {
		cfg, err = config.Parse(nil, ".", envLookup)
	}
	if err != nil {
		return nil, err
	}
	over := map[string]string{}
	for k, v := range f.overrides {
		if *v != "" {
			over[k] = *v
		}
	}
	if err := cfg.Apply(over); err != nil {
		return nil, err
	}
	errs, warns := cfg.Validate()
	if len(errs) > 0 {
		return nil, &config.Error{File: f.config, Problems: errs}
	}
	for _, w := range warns {
		slog.Warn("config: " + w.String())
	}
	return cfg, nil
}

func newLogger(c config.Log, w io.Writer) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(c.Level)); err != nil {
		return nil, fmt.Errorf("log.level %q: %w", c.Level, err)
	}
	o := &slog.HandlerOptions{Level: lvl}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, o)), nil
	}
	return slog.New(slog.NewTextHandler(w, o)), nil
}
