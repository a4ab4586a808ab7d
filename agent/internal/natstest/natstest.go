// Package natstest runs a real clustered MQTT broker for tests: a cluster
// of NATS servers with their MQTT gateway and clustered JetStream (which
// keeps MQTT sessions, QoS 1 subscriptions and retained messages), each node
// a nats-server process on loopback ports in the test's temporary
// directory, stopped at cleanup. A test kills and restarts nodes (failover)
// and, through the project's TCP proxy in front of each node's MQTT port,
// cuts or blackholes the path to one node (a partition as its clients see
// it).
//
// Tests are skipped, with a message saying why, in -short mode and when
// nats-server is not installed (Debian: apt-get install nats-server, which
// cross/setup.sh does).
//
//	c := natstest.Start(t, 3)
//	... point the code under test at c.URLs() ...
//	c.Kill(0); c.Start(0)
package natstest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/vigil-edge/vigil/agent/internal/childproc"
	"github.com/vigil-edge/vigil/agent/internal/netproxy"
	"github.com/vigil-edge/vigil/agent/internal/testkit"
)

// Available reports whether nats-server is installed.
func Available() bool { return binary() != "" }

func binary() string {
	for _, p := range []string{"/usr/sbin/nats-server", "/usr/bin/nats-server"} {
		if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
			return p
		}
	}
	if p, err := exec.LookPath("nats-server"); err == nil {
		return p
	}
	return ""
}

// Cluster is a NATS cluster with MQTT and JetStream run for a test.
type Cluster struct {
	t     testing.TB
	bin   string
	dir   string
	nodes []*Node
}

// Node is one server of the cluster.
type Node struct {
	c        *Cluster
	i        int
	name     string
	client   int // NATS client port
	route    int // cluster port
	mqtt     int // MQTT port
	monitor  int // HTTP monitoring port
	conf     string
	proxy    *netproxy.Proxy // in front of the MQTT port
	mu       sync.Mutex
	proc     childproc.Slot
	logs     bytes.Buffer
	logLimit int
}

// Start starts an n-node cluster (n ≥ 1; 3 for a JetStream quorum that
// survives one node) and waits until every node serves MQTT and JetStream
// has a leader. It skips in -short mode and when nats-server is missing.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test with a real NATS cluster: skipped in -short mode")
	}
	bin := binary()
	if bin == "" {
		t.Skip("nats-server is not installed (apt-get install nats-server; cross/setup.sh does)")
	}
	c := &Cluster{t: t, bin: bin}
	// The directory is removed after the nodes and the proxies stopped
	// (cleanups run last registered first).
	base := t.TempDir()
	// The ports are free when chosen but may be taken before a node binds
	// them (by another process's outgoing connection, say): a node that
	// exits on "address already in use" makes the cluster start again on
	// other ports.
	for attempt := 1; ; attempt++ {
		err := c.launch(filepath.Join(base, fmt.Sprint(attempt)), n)
		if err == nil {
			break
		}
		c.Stop()
		if attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatalf("natstest: %v\n%s", err, c.Logs())
		}
		t.Logf("natstest: starting the cluster again on other ports: %v", err)
	}
	t.Cleanup(c.Stop)
	c.WaitReady(60 * time.Second)
	return c
}

// launch starts n nodes on free ports, each with its proxy, keeping their
// stores under dir.
func (c *Cluster) launch(dir string, n int) error {
	c.dir, c.nodes = dir, nil
	ports, err := testkit.FreePorts(4 * n)
	if err != nil {
		return err
	}
	for i := range n {
		nd := &Node{c: c, i: i, name: fmt.Sprintf("n%d", i+1),
			client: ports[4*i], route: ports[4*i+1], mqtt: ports[4*i+2], monitor: ports[4*i+3], logLimit: 1 << 20}
		p, err := netproxy.New(fmt.Sprintf("127.0.0.1:%d", nd.mqtt))
		if err != nil {
			return fmt.Errorf("proxy: %w", err)
		}
		nd.proxy = p
		c.t.Cleanup(func() { p.Close() })
		c.nodes = append(c.nodes, nd)
	}
	for _, nd := range c.nodes {
		if err := nd.writeConfig(); err != nil {
			return err
		}
	}
	for _, nd := range c.nodes {
		if err := nd.start(); err != nil {
			return err
		}
	}
	return nil
}

func (nd *Node) writeConfig() error {
	var routes []string
	for _, o := range nd.c.nodes {
		if o != nd {
			routes = append(routes, fmt.Sprintf("nats-route://127.0.0.1:%d", o.route))
		}
	}
	dir := filepath.Join(nd.c.dir, nd.name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// One node is a standalone server: JetStream refuses a cluster
	// without routes.
	cluster := fmt.Sprintf(`cluster {
  name: vigil-test
  listen: 127.0.0.1:%d
  routes: [%s]
}`, nd.route, strings.Join(routes, ", "))
	if len(nd.c.nodes) == 1 {
		cluster = ""
	}
	conf := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
http: 127.0.0.1:%d
jetstream {
  store_dir: %q
  max_memory_store: 64MB
  max_file_store: 512MB
}
%s
mqtt {
  listen: 127.0.0.1:%d
  ack_wait: "10s"
  stream_replicas: %d
  consumer_replicas: %d
}
`, nd.name, nd.client, nd.monitor, filepath.Join(dir, "js"), cluster, nd.mqtt, min(3, len(nd.c.nodes)), min(3, len(nd.c.nodes)))
	nd.conf = filepath.Join(dir, "nats.conf")
	return os.WriteFile(nd.conf, []byte(conf), 0o644)
}

type nodeLog struct{ nd *Node }

func (w nodeLog) Write(p []byte) (int, error) {
	w.nd.mu.Lock()
	defer w.nd.mu.Unlock()
	if w.nd.logs.Len() < w.nd.logLimit {
		w.nd.logs.Write(p)
	}
	return len(p), nil
}

// start starts the node's process and waits until it serves MQTT and
// listens for routes (which it does last: a route port taken by then makes
// it exit after it served MQTT).
func (nd *Node) start() error {
	cmd := exec.Command(nd.c.bin, "-c", nd.conf)
	cmd.Stdout, cmd.Stderr = nodeLog{nd}, nodeLog{nd}
	nd.mu.Lock()
	from := nd.logs.Len()
	nd.mu.Unlock()
	proc, err := childproc.Start(cmd)
	if err != nil {
		return fmt.Errorf("start %s: %w", nd.name, err)
	}
	nd.proc.Set(proc)
	logged := func(s string) bool {
		nd.mu.Lock()
		defer nd.mu.Unlock()
		return nd.logs.Len() > from && bytes.Contains(nd.logs.Bytes()[from:], []byte(s))
	}
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for served := false; ; {
		if !served {
			if conn, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", nd.mqtt), time.Second); err == nil {
				conn.Close()
				served = true
			}
		}
		if served && (len(nd.c.nodes) == 1 || logged("Listening for route connections")) {
			return nil
		}
		select {
		case <-proc.Done():
			nd.mu.Lock()
			out := string(nd.logs.Bytes()[from:])
			nd.mu.Unlock()
			fatal := ""
			for l := range strings.Lines(out) {
				if strings.Contains(l, "[FTL]") {
					fatal = ": " + strings.TrimSpace(l)
				}
			}
			return fmt.Errorf("%s exited: %v%s", nd.name, proc.Err(), fatal)
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s does not serve MQTT on %d or routes on %d", nd.name, nd.mqtt, nd.route)
		}
	}
}

// WaitReady waits until the running nodes agree on a JetStream meta leader
// and every running node accepts an MQTT session (which needs the MQTT
// streams' leaders), and fails the test after timeout.
func (c *Cluster) WaitReady(timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for c.metaLeader() == "" || !c.sessionsServed() {
		if time.Now().After(deadline) {
			c.t.Fatalf("natstest: no JetStream meta leader after %v\n%s", timeout, c.Logs())
		}
		<-tick.C
	}
}

// sessionsServed reports whether every running node accepts a persistent
// MQTT session.
func (c *Cluster) sessionsServed() bool {
	for _, nd := range c.nodes {
		if !nd.Running() {
			continue
		}
		o := paho.NewClientOptions().AddBroker(nd.DirectURL()).SetClientID("natstest-probe-" + nd.name).
			SetCleanSession(false).SetAutoReconnect(false).SetConnectTimeout(5 * time.Second).SetProtocolVersion(4)
		cl := paho.NewClient(o)
		tok := cl.Connect()
		ok := tok.WaitTimeout(10*time.Second) && tok.Error() == nil
		if ok {
			cl.Disconnect(0)
		}
		if !ok {
			return false
		}
	}
	return true
}

// metaLeader is the JetStream meta leader as the first running node sees
// it, or "" while it or the leader of any MQTT stream (sessions, messages,
// retained) that the cluster has created is missing or a node that is not
// running, as right after a node died.
func (c *Cluster) metaLeader() string {
	for _, nd := range c.nodes {
		if !nd.Running() {
			continue
		}
		resp, err := (&http.Client{Timeout: time.Second}).Get(fmt.Sprintf("http://127.0.0.1:%d/jsz?accounts=true&streams=true", nd.monitor))
		if err != nil {
			continue
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var jsz struct {
			Meta *struct {
				Leader string `json:"leader"`
			} `json:"meta_cluster"`
			Accounts []struct {
				Streams []struct {
					Name    string `json:"name"`
					Cluster struct {
						Leader string `json:"leader"`
					} `json:"cluster"`
				} `json:"stream_detail"`
			} `json:"account_details"`
		}
		if json.Unmarshal(body, &jsz) != nil {
			continue
		}
		if len(c.nodes) == 1 { // standalone: no meta group, no leaders
			return nd.name
		}
		if jsz.Meta == nil {
			continue
		}
		for _, a := range jsz.Accounts {
			for _, st := range a.Streams {
				if !c.running(st.Cluster.Leader) {
					return ""
				}
			}
		}
		if !c.running(strings.TrimSuffix(jsz.Meta.Leader, "/vigil-test")) {
			return ""
		}
		return jsz.Meta.Leader
	}
	return ""
}

// running reports whether the node of that server name runs.
func (c *Cluster) running(name string) bool {
	for _, nd := range c.nodes {
		if nd.name == name {
			return nd.Running()
		}
	}
	return false
}

// Node returns node i (from 0).
func (c *Cluster) Node(i int) *Node { return c.nodes[i] }

// Size is the number of nodes.
func (c *Cluster) Size() int { return len(c.nodes) }

// URLs are the nodes' MQTT URLs through their proxies, in node order.
func (c *Cluster) URLs() []string {
	var out []string
	for _, nd := range c.nodes {
		out = append(out, nd.URL())
	}
	return out
}

// URL is the node's MQTT URL through its proxy.
func (nd *Node) URL() string { return "tcp://" + nd.proxy.Addr() }

// DirectURL is the node's MQTT URL without the proxy.
func (nd *Node) DirectURL() string { return fmt.Sprintf("tcp://127.0.0.1:%d", nd.mqtt) }

// ClientOptions are paho options for a client of this node, directly (not
// through the proxy), that reconnects by itself.
func (nd *Node) ClientOptions(clientID string) *paho.ClientOptions {
	return paho.NewClientOptions().AddBroker(nd.DirectURL()).SetClientID(clientID).SetProtocolVersion(4).
		SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(200 * time.Millisecond).
		SetConnectTimeout(5 * time.Second)
}

// Proxy is the TCP proxy in front of the node's MQTT port: Cut or
// Blackhole it to partition the node from its MQTT clients.
func (nd *Node) Proxy() *netproxy.Proxy { return nd.proxy }

// Name is the node's server name (n1, n2, …).
func (nd *Node) Name() string { return nd.name }

// Running reports whether the node's process runs.
func (nd *Node) Running() bool { return nd.proc.Get().Running() }

// signal stops the node with sig, killing it after 15 s.
func (nd *Node) signal(sig syscall.Signal) { _ = nd.proc.Get().Stop(sig, 15*time.Second) }

// Kill stops the node abruptly, as a crash would; its MQTT clients lose
// their connection.
func (nd *Node) Kill() { nd.signal(syscall.SIGKILL) }

// Start restarts a stopped node on its ports and with its JetStream store.
func (nd *Node) Start() {
	nd.c.t.Helper()
	if nd.Running() {
		return
	}
	if err := nd.start(); err != nil {
		nd.c.t.Fatalf("natstest: %v\n%s", err, nd.c.Logs())
	}
}

// Stop stops every node.
func (c *Cluster) Stop() {
	for _, nd := range c.nodes {
		nd.signal(syscall.SIGTERM)
	}
}

// Logs are the nodes' outputs, for a failing test's message.
func (c *Cluster) Logs() string {
	var b strings.Builder
	for _, nd := range c.nodes {
		nd.mu.Lock()
		fmt.Fprintf(&b, "--- %s\n%s", nd.name, nd.logs.String())
		nd.mu.Unlock()
	}
	return b.String()
}
