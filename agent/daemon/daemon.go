// Package daemon is `vigil run`: it builds Vigil's parts from a config,
// supervises them while they run and replaces the data plane on a reload.
//
// The buffer, the embedded broker, the HTTP server and the buffer's
// consumers (the MQTT publisher, the Amplitude and Dify forwarders and the
// --print-alerts console) live as long as the Daemon; the data plane
// (models, pipeline, sources) is a generation that Reload replaces.
//
// # Reload
//
// Reload (SIGHUP, the MQTT reload command) builds a new generation from the
// re-read config and swaps it in. A stream whose model and detector
// settings did not change keeps its state (open episodes, partial windows,
// behaviour keys, learning samples: see pipeline.Pipeline.Adopt), and the
// counters in health and /metrics carry on. A config that changes a setting
// only a restart applies (restartSettings: device_id, data_dir, log,
// http.listen, buffer, mqtt, health, amplitude, dify) is not applied at
// all; nor is one that fails to build. Either way the old generation keeps
// running and Reload says why.
//
// # Supervision
//
// Each part that fails while the daemon runs is handled by one of two
// policies, chosen by what a restart can and cannot mend:
//
//   - Restarted with capped, jittered exponential backoff (Options.Restart,
//     1 s doubling to 1 min by default; the delay starts over once a run has
//     lasted longer than the cap): the consumers (consumer/mqtt,
//     consumer/amplitude, consumer/dify, consumer/console), which read the
//     buffer from their own durable cursor and so lose and repeat nothing
//     when restarted, whether they return an error or return early; and the
//     live sources (source/NAME for simulator, kiosk, http and mqtt
//     sources), which return only on an error: a broker refusing the
//     connection, a put that fails. Each restart is logged, counted in
//     /metrics as vigil_part_restarts_total{part="..."}, and the part is
//     shown in health (and so in the MQTT health message and the status
//     command) as "restarting" with its last error until it runs again;
//     /healthz reports it as a problem meanwhile.
//   - Ending Run with the part's error, so that systemd (Restart=on-failure)
//     restarts the whole process: the pipeline (it holds every stream's
//     state, so a failed one is restarted with everything else; today it
//     counts its own errors and returns none), the HTTP server and
//     the embedded broker (a listener that died will not come back on its
//     own, and the health endpoint would lie meanwhile), and replay sources
//     (a file that cannot be read does not mend, and reading it again from
//     its start would feed the pipeline the same samples twice).
//
// A source that returns nil (a replay at its end, a simulator with a sample
// count) has finished: it is not restarted.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/vigil-edge/vigil/agent/config"
	"github.com/vigil-edge/vigil/agent/episodes"
	"github.com/vigil-edge/vigil/agent/forward"
	"github.com/vigil-edge/vigil/agent/health"
	"github.com/vigil-edge/vigil/agent/internal/httpserve"
	"github.com/vigil-edge/vigil/agent/pipeline"
	"github.com/vigil-edge/vigil/agent/publish"
	"github.com/vigil-edge/vigil/agent/statuspage"
	"github.com/vigil-edge/vigil/buffer"
	"github.com/vigil-edge/vigil/inference"
)

// Options are what a Daemon needs beside its config.
type Options struct {
	// Logger receives the daemon's logs (default: discarded).
	Logger *slog.Logger
	// Stdout is where PrintAlerts prints (default: discarded).
	Stdout io.Writer
	// PrintAlerts prints every alert on Stdout as it is stored.
	PrintAlerts bool
	// Version is vigil's version, reported in health and status.
	Version string
	// ReloadConfig reads the config again for Reload; nil makes Reload fail.
	ReloadConfig func() (*config.Config, error)
	// Restart is the backoff between the restarts of a failed part (see the
	// package doc); zero fields take their defaults (1 s, 1 min).
	Restart forward.Backoff
	// WrapPart, if set, wraps the run function of every supervised part
	// (named as in the package doc, plus "pipeline", "http" and
	// "embedded-broker") before it runs: tests
	// use it to make a part fail.
	WrapPart func(name string, run func(context.Context) error) func(context.Context) error
}

// Daemon is `vigil run`. Build it with New, then call Run once.
type Daemon struct {
	opts Options
	log  *slog.Logger

	buf      buffer.Buffer
	recent   *statuspage.Recent // the latest scores and alerts, for the status page
	episodes *episodes.Ledger   // data_dir/episodes.jsonl: the open episodes (nil: none kept)
	reporter *health.Reporter
	sup      *supervisor
	started  time.Time

	mu     sync.Mutex
	cfg    *config.Config
	gen    *generation
	events http.Handler // the current generation's POST /v1/events

	ready      chan struct{}
	addr       string
	reloadReq  chan chan error
	rebuildReq chan chan error // rebuild the generation from the running config (settings.go)
	settings   *settingsStore  // data_dir/settings.json
	deploy     *deployer       // deploy-model (deploy.go)
	auth       *cmdAuth        // signed commands (cmdauth.go)
	runCtx     context.Context // Run's context, for the shadow verdicts
	shadowMu   sync.Mutex
	shadows    map[string]*shadowRun // stream → its shadow run (shadow.go)
	promoteMu  sync.Mutex

	consumers []consumer
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

// New returns a Daemon for cfg, which must be valid (config.Validate).
// Nothing is opened or started until Run.
func New(cfg *config.Config, opts Options) (*Daemon, error) {
	if cfg == nil {
		return nil, errors.New("daemon: no config")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Stdout == nil {
		opts.Stdout = io.Discard
	}
	if opts.Restart.Initial <= 0 {
		opts.Restart.Initial = time.Second
	}
	if opts.Restart.Max <= 0 {
		opts.Restart.Max = max(time.Minute, opts.Restart.Initial)
	}
	if err := opts.Restart.Validate("Options.Restart"); err != nil {
		return nil, fmt.Errorf("daemon: %w", err)
	}
	d := &Daemon{
		opts: opts, log: opts.Logger, cfg: cfg,
		sup:       newSupervisor(opts.Logger, opts.Restart, opts.WrapPart),
		ready:     make(chan struct{}),
		reloadReq: make(chan chan error), rebuildReq: make(chan chan error),
	}
	d.deploy = &deployer{d: d}
	return d, nil
}

// Ready is closed once the daemon serves: its HTTP server listens (Addr is
// set) and the sources run. It stays open if Run fails before that.
func (d *Daemon) Ready() <-chan struct{} { return d.ready }

// Addr is the HTTP server's address, once Ready is closed.
func (d *Daemon) Addr() string { return d.addr }

// Stats are the current generation's pipeline statistics.
func (d *Daemon) Stats() pipeline.Stats {
	if g := d.current(); g != nil {
		return g.pipe.Stats()
	}
	return pipeline.Stats{}
}

// Health is the health snapshot (the MQTT health message, /healthz); zero
// until Run has built the parts.
func (d *Daemon) Health() health.Snapshot {
	d.mu.Lock()
	r := d.reporter
	d.mu.Unlock()
	if r == nil {
		return health.Snapshot{}
	}
	return r.Snapshot()
}

// Run opens the buffer, starts the data plane, the consumers and the HTTP
// server, and returns when ctx ends, after an ordered shutdown: sources stop
// first, the pipeline drains into the buffer, then the consumers get a
// bounded grace period. It returns early with the error of a part whose
// failure ends it (see the package doc).
func (d *Daemon) Run(ctx context.Context) error {
	d.started = time.Now()
	d.runCtx = ctx
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
	d.settings = d.openSettings(d.cfg.DataDir)
	d.openEpisodeLedger(ctx)
	if d.episodes != nil {
		defer d.episodes.Close()
	}
	if err := d.startEmbeddedBroker(); err != nil {
		return err
	}
	gen, err := d.newGeneration(d.cfg)
	if err != nil {
		return err
	}
	// Current before anything can ask for it (health, a remote command);
	// it runs once the consumers and the HTTP server do.
	d.swap(gen)
	reporter := health.NewReporter(health.Sources{
		Device: d.cfg.DeviceID, Version: d.opts.Version, Started: d.started,
		Pipeline:   d.Stats,
		Buffer:     buf.Stats,
		Forwarders: map[string]func() health.Forwarder{},
		Parts:      d.sup.parts,
		Broker:     d.brokerState, Lanes: laneCaps(d.cfg), BufferMaxBytes: int64(d.cfg.Buffer.MaxBytes), TFLite: inference.Version(),
		Inputs: d.inputChecks,
		Extra: map[string]func() any{"streams": func() any { return d.effective() },
			"deployments": func() any { return d.deploy.deployments() },
			"shadow":      func() any { return d.shadowState() }},
	})
	d.mu.Lock()
	d.reporter = reporter
	d.mu.Unlock()
	if err := d.setupConsumers(); err != nil {
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
	h := d.cfg.HTTP
	srv, ln, err := httpserve.New(d.routes(), ln, httpserve.Options{ReadHeaderTimeout: h.ReadHeaderTimeout, ReadTimeout: h.ReadTimeout,
		WriteTimeout: h.WriteTimeout, IdleTimeout: h.IdleTimeout, MaxConns: h.MaxConnections})
	if err != nil {
		gen.close()
		return err
	}

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
		run := d.sup.wrap("embedded-broker", d.embedded.Run)
		go func() { brokerDone <- run(brokerCtx) }()
	}
	var consumers sync.WaitGroup
	for _, c := range d.consumers {
		consumers.Go(func() { d.sup.keep(consCtx, "consumer/"+c.name, c.run, restartAlways) })
	}

	httpErr := make(chan error, 1)
	serve := d.sup.wrap("http", func(context.Context) error { return srv.Serve(ln) })
	go func() {
		if err := serve(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
			httpErr <- err
		}
		close(httpErr)
	}()
	gen.start(ctx, d.sup)
	orphanCtx, stopOrphans := context.WithCancel(ctx)
	orphansStopped := d.closeSilentOrphans(orphanCtx)
	d.log.Info("vigil running", "version", d.opts.Version, "device", d.cfg.DeviceID, "http", d.addr,
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
		case err := <-brokerDone:
			if ctx.Err() == nil {
				if err == nil {
					err = errors.New("stopped")
				}
				runErr = fmt.Errorf("embedded broker: %w", err)
				brokerDone = nil
				break loop
			}
		case err := <-d.current().done:
			if err != nil {
				runErr = err
				break loop
			}
		case reply := <-d.reloadReq:
			d.reload(ctx, reply)
		case reply := <-d.rebuildReq:
			d.rebuild(ctx, reply)
		}
	}
	if runErr != nil {
		d.log.Error("a part failed: stopping", "err", runErr)
	}
	notifySystemd("STOPPING=1")
	stopOrphans()
	orphansStopped()
	watchdog()
	d.log.Info("shutting down: stopping sources, draining the pipeline")
	d.current().stop()
	d.saveShadows() // the pipeline has drained: the runs' last counts
	shut, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	srv.Shutdown(shut)
	cancel()
	ln.Close() // in case Serve never took it
	// A bounded grace period for the consumers to deliver what is buffered;
	// whatever they do not deliver stays in the buffer for the next start.
	grace := time.AfterFunc(3*time.Second, stopConsumers)
	consumers.Wait()
	grace.Stop()
	stopBroker()
	if d.embedded != nil && brokerDone != nil {
		if err := <-brokerDone; err != nil && runErr == nil {
			runErr = fmt.Errorf("embedded broker: %w", err)
		}
	}
	d.log.Info("stopped")
	return runErr
}

// Reload asks the running daemon to reload its config and models and waits
// for the outcome. The MQTT reload command and SIGHUP (in package main) use
// it. If anything in the new config is wrong, or it changes a setting that
// only a restart applies (a *RestartError names them), none of it is
// applied: the previous config and models keep running and Reload returns
// why.
func (d *Daemon) Reload(ctx context.Context) error { return ask(ctx, d.reloadReq) }

// ask hands Run's loop a reply channel on req and waits for its answer.
func ask(ctx context.Context, req chan<- chan error) error {
	reply := make(chan error, 1)
	select {
	case req <- reply:
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
// wrong, or the new config changes a setting only a restart applies, the old
// one keeps running and the error is logged.
func (d *Daemon) reload(ctx context.Context, reply chan error) {
	err := func() error {
		if d.opts.ReloadConfig == nil {
			return errors.New("no config to reload")
		}
		cfg, err := d.opts.ReloadConfig()
		if err != nil {
			return err
		}
		if restart := restartOnly(d.cfg, cfg); len(restart) > 0 {
			return &RestartError{Keys: restart}
		}
		return d.replace(ctx, cfg)
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

// replace builds a generation from cfg and swaps it in for the running one;
// on error the running one carries on.
func (d *Daemon) replace(ctx context.Context, cfg *config.Config) error {
	gen, err := d.newGeneration(cfg)
	if err != nil {
		return err
	}
	old := d.current()
	old.stop()
	// Streams whose model and detector settings did not change keep
	// their state (open episodes, windows, learning samples), and the
	// counters carry on.
	if kept := gen.pipe.Adopt(old.pipe); len(kept) > 0 {
		d.log.Info("reload: streams keep their state", "streams", strings.Join(kept, ", "))
	}
	d.swap(gen)
	gen.start(ctx, d.sup)
	d.mu.Lock()
	d.cfg = cfg
	d.mu.Unlock()
	return nil
}

func (d *Daemon) current() *generation {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.gen
}

func (d *Daemon) swap(g *generation) {
	d.mu.Lock()
	d.gen = g
	d.events = g.events
	d.mu.Unlock()
}
