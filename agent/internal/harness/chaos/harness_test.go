package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/vigil-edge/vigil/agent/forward/amplitude/amplitudetest"
	"github.com/vigil-edge/vigil/agent/forward/dify/difytest"
	"github.com/vigil-edge/vigil/agent/internal/childproc"
	"github.com/vigil-edge/vigil/agent/internal/mqtttest"
	"github.com/vigil-edge/vigil/agent/internal/natstest"
	"github.com/vigil-edge/vigil/agent/internal/netproxy"
	"github.com/vigil-edge/vigil/agent/internal/testkit"
	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/agent/source"
	"github.com/vigil-edge/vigil/buffer"
	"github.com/vigil-edge/vigil/internal/testfs"
)

// Test fixtures shared by every scenario.
const (
	deviceID = "chaos-dev-01"
	ampKey   = "chaos-amplitude-key-0001"
	difyKey  = "app-chaos-dify-key-0001"
	// replaySpeed is the replay's speed factor: the simulated pump has one
	// sample per second, so each stream takes this many samples per second.
	replaySpeed = 200
)

// pumpColumns are the simulated pump's channels, in the model's order.
var pumpColumns = source.PumpChannels()

// vigilBinary builds the vigil binary once per test process, with -race
// when the suite runs under -race (or takes VIGIL_CHAOS_BIN).
var vigilBinary = sync.OnceValues(func() (string, error) {
	if p := os.Getenv("VIGIL_CHAOS_BIN"); p != "" {
		return filepath.Abs(p)
	}
	dir, err := os.MkdirTemp("", "vigil-chaos-bin-")
	if err != nil {
		return "", fmt.Errorf("build vigil: %w", err)
	}
	out := filepath.Join(dir, "vigil")
	args := []string{"build", "-o", out}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "github.com/vigil-edge/vigil/agent")
	// go test puts the go command it runs under first in $PATH.
	cmd := exec.Command("go", args...)
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build vigil: %w\n%s", err, b)
	}
	return out, nil
})

// settings are what a scenario changes in the common environment.
type settings struct {
	// rows is the number of samples each of the two replayed streams has.
	rows int
	// extraYAML is appended to the config (a later key wins, so it can
	// replace a whole block).
	bufferYAML string
	// mqttSource replaces the replay sources by one MQTT source that the
	// scenario publishes to (topic chaos/pump1).
	mqttSource bool
	// ampTimeout is amplitude.timeout; difyTimeout dify.timeout.
	ampTimeout, difyTimeout time.Duration
	// cluster replaces the mosquitto broker by a three-node NATS cluster
	// (MQTT gateway, clustered JetStream): vigil gets the nodes' proxies as
	// mqtt.brokers, with a persistent session, and the subscriber sits on
	// the third node.
	cluster bool
	// smallFS, when positive, puts data_dir on an ext4 filesystem of that
	// many bytes of its own (the scenario is skipped unless run as root).
	smallFS int64
}

// env is one scenario's world: a broker, a proxy in front of it, the two
// HTTP doubles, a subscriber with a persistent session, and the vigil
// process.
type env struct {
	t       *testing.T
	set     settings
	dir     string
	dataDir string
	fsDir   string // the small filesystem holding dataDir, if any
	cfgPath string
	broker  *mqtttest.Broker
	proxy   *netproxy.Proxy
	cluster *natstest.Cluster // instead of broker and proxy, with settings.cluster
	amp     *amplitudetest.Server
	dify    *difytest.Server
	sub     *subscriber

	httpAddr string
	proc     *childproc.Proc
	starts   int
	maxRSS   atomic.Int64 // bytes, over every incarnation
	lastMet  metrics      // the last metrics read before a stop
	faultEnd time.Time    // when the fault ended, if not when the fault func returned
	notes    []string
}

// newEnv sets up everything but vigil.
func newEnv(t *testing.T, set settings) *env {
	t.Helper()
	if set.ampTimeout == 0 {
		set.ampTimeout = 2 * time.Second
	}
	if set.difyTimeout == 0 {
		set.difyTimeout = 5 * time.Second
	}
	e := &env{t: t, set: set, dir: t.TempDir()}
	e.dataDir = filepath.Join(e.dir, "data")
	if set.smallFS > 0 {
		e.fsDir = testfs.Mount(t, "ext4", set.smallFS)
		e.dataDir = filepath.Join(e.fsDir, "data")
	}
	var err error
	if set.cluster {
		e.cluster = natstest.Start(t, 3)
	} else {
		// A persistent broker, so that the subscriber's session (and what
		// is queued for it) survives a broker restart; no cap on queued
		// messages.
		e.broker = mqtttest.Start(t, mqtttest.Options{Persistence: true, ExtraConfig: "max_queued_messages 0"})
		if e.proxy, err = netproxy.New(e.broker.Addr()); err != nil {
			t.Fatalf("start proxy: %v", err)
		}
		t.Cleanup(func() { e.proxy.Close() })
	}
	e.amp = amplitudetest.NewServer(amplitudetest.Options{APIKey: ampKey})
	t.Cleanup(e.amp.Close)
	e.dify = difytest.NewServer(difytest.Options{APIKey: difyKey})
	t.Cleanup(e.dify.Close)
	subOpts := func(id string) *paho.ClientOptions {
		if e.cluster != nil {
			return e.cluster.Node(2).ClientOptions(id)
		}
		return e.broker.ClientOptions(id)
	}
	if e.sub, err = newSubscriber(subOpts, "chaos-sub", "vigil/"+deviceID+"/alerts/#", "vigil/"+deviceID+"/advice/#"); err != nil {
		t.Fatalf("subscriber: %v", err)
	}
	t.Cleanup(e.sub.close)
	if err := e.writeConfig(); err != nil {
		t.Fatalf("config: %v", err)
	}
	return e
}

// writeConfig writes the input files and vigil.yaml.
func (e *env) writeConfig() error {
	models, err := filepath.Abs("../../../../models")
	if err != nil {
		return fmt.Errorf("models dir: %w", err)
	}
	ports, err := testkit.FreePorts(1)
	if err != nil {
		return err
	}
	e.httpAddr = fmt.Sprintf("127.0.0.1:%d", ports[0])
	var srcs, streams strings.Builder
	cols, _ := json.Marshal(pumpColumns)
	if e.set.mqttSource {
		vals := map[string]string{}
		for _, c := range pumpColumns {
			vals[c] = c
		}
		vb, _ := json.Marshal(vals)
		fmt.Fprintf(&srcs, `
  - name: bus
    type: mqtt
    mqtt: {broker: %q, topics: ["chaos/#"], qos: 1, fields: {timestamp: ts, timestamp_format: unix_ms, values: %s}}`, e.broker.URL(), vb)
		streams.WriteString("\n  - {name: pump1, source: bus, model: pump8}")
	} else {
		for i, seed := range []uint64{3, 7} {
			path := filepath.Join(e.dir, fmt.Sprintf("pump%d.csv", i+1))
			if err := writePumpCSV(path, e.set.rows, seed); err != nil {
				return err
			}
			fmt.Fprintf(&srcs, `
  - name: src%d
    type: replay
    replay: {path: %s, speed: %d, columns: %s}`, i+1, path, replaySpeed, cols)
			fmt.Fprintf(&streams, "\n  - {name: pump%d, source: src%d, model: pump8}", i+1, i+1)
		}
	}
	bufYAML := e.set.bufferYAML
	if bufYAML == "" {
		bufYAML = "{kind: badger, memory_budget: 16MiB}"
	}
	cfg := fmt.Sprintf(`device_id: %s
data_dir: %s
models_dir: %s
log: {level: info, format: json}
http: {listen: %q}
inference: {workers: 1}
buffer: %s
mqtt: {%s, keepalive: 2s, connect_timeout: 2s, replay_rate: 500}
health: {interval: 1s}
amplitude: {endpoint: %q, api_key: %q, flush_interval: 200ms, timeout: %s, max_retry_backoff: 2s}
dify: {base_url: %q, api_key: %q, min_severity: major, rate_limit: 0, cooldown: 0s, timeout: %s, max_retry_backoff: 2s}
sources:%s
streams:%s
`, deviceID, e.dataDir, models, e.httpAddr, bufYAML, e.mqttYAML(),
		e.amp.HTTPURL(), ampKey, e.set.ampTimeout, e.dify.BaseURL(), difyKey, e.set.difyTimeout,
		srcs.String(), streams.String())
	e.cfgPath = filepath.Join(e.dir, "vigil.yaml")
	if err := os.WriteFile(e.cfgPath, []byte(cfg), 0o600); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	return nil
}

// mqttYAML is the broker part of vigil's mqtt block: the proxy in front of
// mosquitto, or the cluster's nodes (each behind its proxy) with a
// persistent session.
func (e *env) mqttYAML() string {
	if e.cluster == nil {
		return fmt.Sprintf("broker: %q", "tcp://"+e.proxy.Addr())
	}
	b, _ := json.Marshal(e.cluster.URLs())
	return fmt.Sprintf("brokers: %s, persistent_session: true", b)
}

// clusterNode waits until vigil's publisher is connected to a node of the
// cluster other than not (-1: any) and returns its index.
func (e *env) clusterNode(ctx context.Context, not int) (int, error) {
	node := -1
	err := waitFor(90*time.Second, func() bool {
		if ctx.Err() != nil {
			return true
		}
		m, err := e.metrics()
		if err != nil {
			return false
		}
		if ok, _ := m.sum("vigil_forwarder_state", `forwarder="mqtt"`, `state="ok"`); ok == 0 {
			return false
		}
		for i := range e.cluster.Size() {
			if v, _ := m.sum("vigil_mqtt_connected", fmt.Sprintf("broker=%q", e.cluster.Node(i).URL())); v > 0 && i != not {
				node = i
				return true
			}
		}
		return false
	})
	if err == nil && node < 0 {
		err = ctx.Err()
	}
	if err != nil {
		return -1, fmt.Errorf("vigil connected to no other node: %w", err)
	}
	return node, nil
}

// faultPlan is the schedule of the simulated pump's faults: one every
// 5 simulated minutes (1.5 s of replay), lasting 2 minutes, so that every
// scenario sees alerts of every severity throughout.
func faultPlan(seed uint64) source.SimulatorOptions {
	o := source.DefaultSimulatorOptions()
	o.Seed, o.Faults = seed, true
	o.Start = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	o.FirstFault, o.FaultEvery, o.FaultDuration = 90*time.Second, 5*time.Minute, 2*time.Minute
	return o
}

func writePumpCSV(path string, rows int, seed uint64) error {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("create %s: %w", path, err)
	}
	defer f.Close()
	if err := source.WriteCSV(f, rows, faultPlan(seed)); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

// startVigil starts vigil and waits until it serves /healthz.
func (e *env) startVigil() {
	e.t.Helper()
	bin, err := vigilBinary()
	if err != nil {
		e.t.Fatalf("%v", err)
	}
	e.starts++
	logf, err := os.OpenFile(filepath.Join(e.dir, "vigil.log"), os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		e.t.Fatalf("vigil log: %v", err)
	}
	cmd := exec.Command(bin, "run", "--config", e.cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	p, err := childproc.Start(cmd)
	logf.Close() // vigil has its own copy
	if err != nil {
		e.t.Fatalf("start vigil: %v", err)
	}
	e.proc = p
	go e.sampleRSS(p)
	e.t.Cleanup(func() { e.kill() })
	err = waitFor(60*time.Second, func() bool {
		select {
		case <-p.Done():
			return true
		default:
		}
		resp, err := http.Get("http://" + e.httpAddr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return true
	})
	select {
	case <-p.Done():
		e.t.Fatalf("vigil exited while starting: %v\n%s", p.Err(), e.logTail())
	default:
	}
	if err != nil {
		e.t.Fatalf("vigil not serving within 60s\n%s", e.logTail())
	}
}

// sampleRSS records the process's peak resident set (VmHWM, which also
// covers the moments between two samples) until it exits.
func (e *env) sampleRSS(p *childproc.Proc) {
	path := fmt.Sprintf("/proc/%d/status", p.Pid())
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if kb := readStatusKB(path, "VmHWM:"); kb > 0 {
			for {
				cur := e.maxRSS.Load()
				if kb*1024 <= cur || e.maxRSS.CompareAndSwap(cur, kb*1024) {
					break
				}
			}
		}
		select {
		case <-p.Done():
			return
		case <-tick.C:
		}
	}
}

func readStatusKB(path, key string) int64 {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), key); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb
		}
	}
	return 0
}

// kill sends SIGKILL and waits for the process to end.
func (e *env) kill() {
	_ = e.proc.Stop(syscall.SIGKILL, time.Minute)
}

// stopVigil asks vigil to stop (SIGTERM) and fails the scenario when it
// does not exit cleanly within the timeout.
func (e *env) stopVigil(timeout time.Duration) error {
	if m, err := e.metrics(); err == nil {
		e.lastMet = m
	}
	if err := e.proc.Stop(syscall.SIGTERM, timeout); err != nil {
		return fmt.Errorf("vigil did not exit within %v of SIGTERM (hang)", timeout)
	}
	if err := e.proc.Err(); err != nil {
		return fmt.Errorf("vigil exited with %w after SIGTERM", err)
	}
	return nil
}

// logTail returns the end of vigil's log, for failure messages.
func (e *env) logTail() string {
	b, _ := os.ReadFile(filepath.Join(e.dir, "vigil.log"))
	if len(b) > 6000 {
		b = b[len(b)-6000:]
	}
	return string(b)
}

// metrics is a parsed /metrics page: "name{labels}" → value.
type metrics map[string]float64

func (e *env) metrics() (metrics, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + e.httpAddr + "/metrics")
	if err != nil {
		return nil, fmt.Errorf("get metrics: %w", err)
	}
	defer resp.Body.Close()
	m := metrics{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' || !strings.HasPrefix(line, "vigil_") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			m[line[:i]] = v
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read metrics: %w", err)
	}
	return m, nil
}

// sum adds the values of every series of name whose labels contain all of
// the given label pairs (`lane="alert"`).
func (m metrics) sum(name string, labels ...string) (float64, int) {
	var v float64
	var n int
	for k, x := range m {
		if k != name && !strings.HasPrefix(k, name+"{") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(k, l)
		}
		if ok {
			v += x
			n++
		}
	}
	return v, n
}

// caughtUp reports whether every consumer of the alert and advice lanes has
// acknowledged everything: the broker PUBACKed every alert, Amplitude took
// it, Dify answered for it.
func (m metrics) caughtUp() bool {
	lag, n := m.sum("vigil_consumer_lag_records", `lane="alert"`)
	adv, _ := m.sum("vigil_consumer_lag_records", `lane="advice"`)
	return n > 0 && lag == 0 && adv == 0
}

// waitCaughtUp waits until vigil has delivered everything it accepted and
// returns how long that took from since.
func (e *env) waitCaughtUp(since time.Time, timeout time.Duration) (time.Duration, error) {
	err := waitFor(timeout, func() bool {
		m, err := e.metrics()
		return err == nil && m.caughtUp()
	})
	if err != nil {
		m, _ := e.metrics()
		var lags []string
		for k, v := range m {
			if strings.HasPrefix(k, "vigil_consumer_lag_records") && v > 0 {
				lags = append(lags, fmt.Sprintf("%s=%v", k, v))
			}
		}
		slices.Sort(lags)
		return 0, fmt.Errorf("not caught up within %v: %s", timeout, strings.Join(lags, " "))
	}
	return time.Since(since), nil
}

// waitInputDone waits until every replayed stream has scored its whole
// file in the current incarnation.
func (e *env) waitInputDone(timeout time.Duration) error {
	want := float64((e.set.rows-60)/10 + 1)
	return waitFor(timeout, func() bool {
		m, err := e.metrics()
		if err != nil {
			return false
		}
		for _, s := range []string{"pump1", "pump2"} {
			if v, _ := m.sum("vigil_stream_windows_total", `stream="`+s+`"`); v < want {
				return false
			}
		}
		return true
	})
}

// waitFor polls cond every 20 ms until it holds, or returns an error after
// timeout. It is the suite's alternative to sleeping.
func waitFor(timeout time.Duration, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			return errors.New("timed out")
		}
		<-tick.C
	}
	return nil
}

// hold lets a fault last for d, the way a real outage lasts: it waits on a
// timer, not on a condition, because the duration is the experiment.
// It returns early when ctx ends.
func hold(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// subscriber collects the alerts and advice published, over a persistent
// session (clean session off, QoS 1) on the broker itself, not through the
// proxy: it sees what the broker accepted, even across broker restarts.
type subscriber struct {
	c paho.Client

	mu   sync.Mutex
	msgs []mqtttest.Message
}

func newSubscriber(clientOptions func(id string) *paho.ClientOptions, id string, filters ...string) (*subscriber, error) {
	s := &subscriber{}
	subs := map[string]byte{}
	for _, f := range filters {
		subs[f] = 1
	}
	opts := clientOptions(id).SetCleanSession(false).SetDefaultPublishHandler(s.add).
		SetConnectRetry(true).SetConnectRetryInterval(200 * time.Millisecond).SetMaxReconnectInterval(200 * time.Millisecond)
	ready := make(chan error, 1)
	opts.SetOnConnectHandler(func(c paho.Client) {
		tok := c.SubscribeMultiple(subs, s.add)
		go func() {
			var err error
			if !tok.WaitTimeout(10 * time.Second) {
				err = errors.New("subscribe timed out")
			} else {
				err = tok.Error()
			}
			select {
			case ready <- err:
			default:
			}
		}()
	})
	s.c = paho.NewClient(opts)
	if tok := s.c.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("connect subscriber: %v", tok.Error())
	}
	select {
	case err := <-ready:
		if err != nil {
			return nil, fmt.Errorf("subscribe: %w", err)
		}
	case <-time.After(10 * time.Second):
		return nil, errors.New("subscribe: no answer within 10s")
	}
	return s, nil
}

func (s *subscriber) add(_ paho.Client, m paho.Message) {
	s.mu.Lock()
	s.msgs = append(s.msgs, mqtttest.Message{Topic: m.Topic(), Payload: slices.Clone(m.Payload()), QoS: m.Qos(),
		Duplicate: m.Duplicate(), Received: time.Now()})
	s.mu.Unlock()
}

func (s *subscriber) messages() []mqtttest.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.msgs)
}

func (s *subscriber) close() { s.c.Disconnect(100) }

// accepted opens vigil's buffer after vigil stopped and returns the last
// sequence number of each lane: every alert with a sequence number from 1
// to LastSeq(alert) was accepted (appended and acknowledged to the
// pipeline), since appends assign sequence numbers without gaps.
func (e *env) accepted() (map[string]uint64, error) {
	opts := buffer.DefaultOptions()
	for _, l := range []string{record.LaneScore, record.LaneAlert, record.LaneAdvice, "deadletter", "dify-journal"} {
		opts.Lanes = append(opts.Lanes, buffer.LaneOptions{Name: l})
	}
	opts.Logger = slog.New(slog.DiscardHandler)
	bo := buffer.DefaultBadgerOptions(filepath.Join(e.dataDir, "buffer"))
	bo.Options = opts
	bo.MemoryBudget = 16 << 20
	b, err := buffer.OpenBadger(bo)
	if err != nil {
		return nil, fmt.Errorf("open vigil's buffer: %w", err)
	}
	defer b.Close()
	out := map[string]uint64{}
	for _, l := range []string{record.LaneScore, record.LaneAlert, record.LaneAdvice, "deadletter"} {
		out[l] = b.LastSeq(l)
	}
	// What a forwarder set aside as a dead letter, with its reason.
	recs, err := b.ReadFrom("deadletter", 1, 20)
	if err == nil {
		for _, r := range recs {
			e.notes = append(e.notes, "dead letter: "+truncate(string(r.Data), 200))
		}
	}
	return out, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
