package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/vigil-edge/vigil/agent/config"
	"github.com/vigil-edge/vigil/agent/forward"
	"github.com/vigil-edge/vigil/agent/forward/dify"
	"github.com/vigil-edge/vigil/agent/health"
	"github.com/vigil-edge/vigil/agent/pipeline"
	"github.com/vigil-edge/vigil/agent/publish"
	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/agent/statuspage"
	"github.com/vigil-edge/vigil/buffer"
	"github.com/vigil-edge/vigil/inference"
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
	d := &daemon{cfg: cfg, log: logger, stdout: stdout, printAlerts: f.printAlerts, reloadConfig: load}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	d.hup = hup
	return d.Run(ctx)
}

// loadConfig applies defaults, the file, VIGIL_* and flags, then validates.
func loadConfig(f runFlags) (*config.Config, error) {
	var cfg *config.Config
	if f.config != "" {
		c, err := config.Load(f.config, envLookup)
		if err != nil {
			return nil, err
		}
		cfg = c
	} else {
		c, err := config.Parse(nil, ".", envLookup)
		if err != nil {
			return nil, err
		}
		cfg = c
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
		e := &config.Error{File: f.config, Problems: errs}
		return nil, e
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

// daemon is `vigil run`: the buffer and the consumers live as long as the
// process; the data plane (models, pipeline, sources) is a generation that a
// reload replaces.
type daemon struct {
	cfg          *config.Config
	log          *slog.Logger
	stdout       io.Writer
	printAlerts  bool
	hup          <-chan os.Signal
	reloadConfig func() (*config.Config, error)

	buf      buffer.Buffer
	recent   *statuspage.Recent // the latest scores and alerts, for the status page
	reporter *health.Reporter
	started  time.Time

	mu     sync.Mutex
	gen    *generation
	events http.Handler // the current generation's POST /v1/events

	// ready is closed when the daemon serves (for tests); addr is the HTTP
	// server's address.
	ready chan struct{}
	addr  string

	consumers []consumer
	reloadReq chan chan error
	embedded  *publish.EmbeddedBroker // the embedded broker, if any
	publisher *publish.Publisher      // nil when MQTT is off
}

// consumer is a long-lived reader of the buffer (the MQTT publisher, the
// forwarders, the console printer).
type consumer struct {
	name  string
	run   func(ctx context.Context) error
	stats func() health.Forwarder
}

// Run opens the buffer, starts the data plane, the consumers and the HTTP
// server, and returns when ctx ends, after an ordered shutdown: sources stop
// first, the pipeline drains into the buffer, then the consumers get a
// bounded grace period.
func (d *daemon) Run(ctx context.Context) error {
	d.started = time.Now()
	if d.ready == nil {
		d.ready = make(chan struct{})
	}
	d.reloadReq = make(chan chan error)
	buf, err := openBuffer(d.cfg, d.log)
	if err != nil {
		return err
	}
	d.buf = buf
	defer func() {
		if err := buf.Close(); err != nil {
			d.log.Error("closing the buffer", "err", err)
		}
	}()
	if err := d.startEmbeddedBroker(); err != nil {
		return err
	}
	gen, err := d.newGeneration(d.cfg)
	if err != nil {
		return err
	}
	d.reporter = health.NewReporter(health.Sources{
		Device: d.cfg.DeviceID, Version: version, Started: d.started,
		Pipeline:   func() pipeline.Stats { return d.current().pipe.Stats() },
		Buffer:     buf.Stats,
		Forwarders: map[string]func() health.Forwarder{},
		Broker:     d.brokerState, Lanes: laneCaps(d.cfg), BufferMaxBytes: int64(d.cfg.Buffer.MaxBytes), TFLite: inference.Version(),
		Inputs: d.inputChecks,
	})
	if err := d.setupConsumers(ctx); err != nil {
		gen.close()
		return err
	}
	for _, c := range d.consumers {
		if c.stats != nil {
			d.reporter.AddForwarder(c.name, c.stats)
		}
	}

	ln, err := net.Listen("tcp", d.cfg.HTTP.Listen)
	if err != nil {
		gen.close()
		return fmt.Errorf("http.listen %s: %w", d.cfg.HTTP.Listen, err)
	}
	d.addr = ln.Addr().String()
	srv := &http.Server{Handler: d.routes(), ReadHeaderTimeout: 10 * time.Second}

	// Consumers run on their own context so that they outlive the sources
	// and drain what the pipeline appends while shutting down.
	consCtx, stopConsumers := context.WithCancel(context.WithoutCancel(ctx))
	defer stopConsumers()
	// The embedded broker outlives the consumers, so that the publisher's
	// offline status reaches it at shutdown.
	brokerCtx, stopBroker := context.WithCancel(context.WithoutCancel(ctx))
	defer stopBroker()
	brokerDone := make(chan error, 1)
	if d.embedded != nil {
		go func() { brokerDone <- d.embedded.Run(brokerCtx) }()
	} else {
		close(brokerDone)
	}
	var consumers errgroup.Group
	for _, c := range d.consumers {
		consumers.Go(func() error {
			if err := c.run(consCtx); err != nil && !errors.Is(err, context.Canceled) {
				return fmt.Errorf("%s: %w", c.name, err)
			}
			return nil
		})
	}

	httpErr := make(chan error, 1)
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			httpErr <- err
		}
		close(httpErr)
	}()
	d.swap(gen)
	gen.start(ctx)
	d.log.Info("vigil running", "version", version, "device", d.cfg.DeviceID, "http", d.addr,
		"streams", len(d.cfg.Streams), "buffer", d.cfg.Buffer.Kind)
	close(d.ready)
	notifySystemd("READY=1")
	watchdog := startWatchdog(ctx, d.reporter, d.log)

	var runErr error
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err := <-httpErr:
			if err != nil {
				runErr = fmt.Errorf("http server: %w", err)
				break loop
			}
		case err := <-d.current().done:
			if err != nil {
				runErr = err
				break loop
			}
		case <-d.hup:
			d.reload(ctx, nil)
		case reply := <-d.reloadReq:
			d.reload(ctx, reply)
		}
	}
	notifySystemd("STOPPING=1")
	watchdog()
	d.log.Info("shutting down: stopping sources, draining the pipeline")
	d.current().stop()
	shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	srv.Shutdown(shut)
	cancel()
	// A bounded grace period for the consumers to deliver what is buffered;
	// whatever they do not deliver stays in the buffer for the next start.
	grace := time.AfterFunc(3*time.Second, stopConsumers)
	if err := consumers.Wait(); err != nil && runErr == nil {
		runErr = err
	}
	grace.Stop()
	stopBroker()
	if err := <-brokerDone; err != nil && runErr == nil {
		runErr = fmt.Errorf("embedded broker: %w", err)
	}
	d.log.Info("stopped")
	return runErr
}

// Reload asks the running daemon to reload its config and models and waits
// for the outcome (the MQTT reload command uses it).
func (d *daemon) Reload(ctx context.Context) error {
	reply := make(chan error, 1)
	select {
	case d.reloadReq <- reply:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// reload builds a new generation from the re-read config; if anything is
// wrong the old one keeps running and the error is logged.
func (d *daemon) reload(ctx context.Context, reply chan error) {
	err := func() error {
		cfg, err := d.reloadConfig()
		if err != nil {
			return err
		}
		if restart := restartOnly(d.cfg, cfg); len(restart) > 0 {
			d.log.Warn("reload: these settings take effect only after a restart", "keys", strings.Join(restart, ", "))
		}
		gen, err := d.newGeneration(cfg)
		if err != nil {
			return err
		}
		old := d.current()
		old.stop()
		d.swap(gen)
		gen.start(ctx)
		d.mu.Lock()
		d.cfg = cfg
		d.mu.Unlock()
		return nil
	}()
	if err != nil {
		d.log.Error("reload failed; the previous config and models keep running", "err", err)
	} else {
		d.log.Info("reloaded config and models")
	}
	if reply != nil {
		reply <- err
	}
}

// restartOnly lists the settings that changed but need a restart.
func restartOnly(old, cur *config.Config) []string {
	var keys []string
	for _, k := range []string{"device_id", "data_dir", "http.listen", "buffer.kind", "buffer.max_bytes", "buffer.memory_budget",
		"mqtt.broker", "mqtt.prefix", "mqtt.embedded_broker.listen"} {
		a, _ := old.Get(k)
		b, _ := cur.Get(k)
		if a != b {
			keys = append(keys, k)
		}
	}
	return keys
}

func (d *daemon) current() *generation {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.gen
}

func (d *daemon) swap(g *generation) {
	d.mu.Lock()
	d.gen = g
	d.events = g.events
	d.mu.Unlock()
}

// routes serves POST /v1/events (the current generation's handler),
// GET /healthz, /livez, /readyz, /metrics, and the status page (/ and
// /status.json).
func (d *daemon) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/v1/events", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		h := d.events
		d.mu.Unlock()
		if h == nil {
			http.Error(w, `{"error":"no http source is configured"}`, http.StatusNotFound)
			return
		}
		h.ServeHTTP(w, r)
	}))
	mux.HandleFunc("GET /healthz", d.reporter.Healthz)
	mux.HandleFunc("GET /livez", d.reporter.Livez)
	mux.HandleFunc("GET /readyz", d.reporter.Readyz)
	sp := d.statusPage()
	mux.Handle("GET /{$}", sp)
	mux.Handle("GET /status.json", sp)
	mux.Handle("GET /metrics", d.reporter.Metrics())
	return mux
}

// openBuffer opens the buffer the config describes.
func openBuffer(cfg *config.Config, log *slog.Logger) (buffer.Buffer, error) {
	opts := buffer.DefaultOptions()
	opts.MaxBytes = int64(cfg.Buffer.MaxBytes)
	opts.MaxRecordBytes = int(cfg.Buffer.MaxRecordBytes)
	if cfg.Buffer.SyncInterval > 0 {
		opts.FlushInterval = cfg.Buffer.SyncInterval
	}
	opts.Logger = log.With("component", "buffer")
	for _, l := range []struct {
		name string
		c    config.Lane
	}{{record.LaneScore, cfg.Buffer.Lanes.Score}, {record.LaneAlert, cfg.Buffer.Lanes.Alert}, {record.LaneAdvice, cfg.Buffer.Lanes.Advice},
		// Records a forwarder gave up on, with the reason; and the Dify
		// forwarder's journal of runs started (see agent/forward/dify).
		{forward.LaneDeadLetter, config.Lane{Priority: 1, Durability: "sync", OnFull: "evict"}},
		{dify.LaneJournal, config.Lane{Priority: 3, Durability: "sync", OnFull: "evict"}}} {
		lo := buffer.LaneOptions{Name: l.name, Priority: l.c.Priority, MaxBytes: int64(l.c.MaxBytes), TTL: l.c.TTL}
		if l.c.Durability == "sync" {
			lo.Durability = buffer.Sync
		} else {
			lo.Durability = buffer.Batched
		}
		if l.c.OnFull == "reject" {
			lo.OnFull = buffer.Reject
		} else {
			lo.OnFull = buffer.Evict
		}
		opts.Lanes = append(opts.Lanes, lo)
	}
	if cfg.Buffer.Kind == "memory" {
		b, err := buffer.NewMemory(opts)
		if err != nil {
			return nil, fmt.Errorf("buffer: %w", err)
		}
		return b, nil
	}
	bo := buffer.DefaultBadgerOptions(filepath.Join(cfg.DataDir, "buffer"))
	bo.Options = opts
	bo.MemoryBudget = int64(cfg.Buffer.MemoryBudget)
	if cfg.Buffer.GCInterval > 0 {
		bo.GCInterval = cfg.Buffer.GCInterval
	}
	b, err := buffer.OpenBadger(bo)
	if err != nil {
		return nil, fmt.Errorf("open buffer %s: %w", bo.Dir, err)
	}
	return b, nil
}
