package cli

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/vigil-edge/vigil/agent/fleet"
	"github.com/vigil-edge/vigil/agent/internal/mqttconn"
	"github.com/vigil-edge/vigil/agent/publish"
	"github.com/vigil-edge/vigil/models"
)

// Fleet is `vigil fleet deploy|status`: the operator's side.
func Fleet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "deploy":
			return runFleetDeploy(ctx, args[1:], stdout, stderr)
		case "status":
			return runFleetStatus(ctx, args[1:], stdout, stderr)
		}
	}
	fmt.Fprintln(stderr, "usage: vigil fleet deploy|status [flags]\n\n"+
		"  deploy   send a signed model to the devices matching --devices over MQTT (deploy-model)\n"+
		"  status   show each device's state and serving models")
	return ErrUsage
}

// fleetConn are the connection flags shared by the fleet subcommands.
type fleetConn struct {
	broker, username, passwordFile, prefix, devices string
	tls                                             publish.TLSOptions
	wait                                            time.Duration
	jsonOut                                         bool
}

func (c *fleetConn) flags(fs interface {
	StringVar(*string, string, string, string)
	DurationVar(*time.Duration, string, time.Duration, string)
	BoolVar(*bool, string, bool, string)
}) {
	fs.StringVar(&c.broker, "broker", "", "broker URL, as mqtt.broker in the agent's config, or a cluster's nodes separated by commas (required)")
	fs.StringVar(&c.username, "username", "", "MQTT username")
	fs.StringVar(&c.passwordFile, "password-file", "", "file holding the MQTT password")
	fs.StringVar(&c.prefix, "prefix", "vigil", "topic prefix, as mqtt.prefix")
	fs.StringVar(&c.devices, "devices", "*", "device ids: a glob pattern or a comma-separated list of them")
	fs.StringVar(&c.tls.CAFile, "ca-file", "", "PEM CAs for the broker (ssl:// brokers)")
	fs.StringVar(&c.tls.CertFile, "cert-file", "", "client certificate (mutual TLS)")
	fs.StringVar(&c.tls.KeyFile, "key-file", "", "client key (mutual TLS)")
	fs.DurationVar(&c.wait, "wait", 2*time.Second, "how long to collect the devices' retained status")
	fs.BoolVar(&c.jsonOut, "json", false, "one JSON object per line")
}

func (c *fleetConn) connect() (paho.Client, error) {
	o := paho.NewClientOptions()
	brokers := strings.Split(c.broker, ",")
	for _, b := range brokers { // a cluster's nodes, tried in order
		o.AddBroker(strings.TrimSpace(b))
	}
	// A client id of its own: another fleet command with the same id (in
	// this process, or in another container where the pid is also 1)
	// would take the session over.
	var nonce [4]byte
	rand.Read(nonce[:])
	o.SetClientID(fmt.Sprintf("vigil-fleet-%d-%x", os.Getpid(), nonce)).
		SetConnectTimeout(fleetConnectTimeout).SetAutoReconnect(true).SetCleanSession(true)
	if c.username != "" {
		o.SetUsername(c.username)
	}
	if c.passwordFile != "" {
		b, err := os.ReadFile(c.passwordFile)
		if err != nil {
			return nil, err
		}
		o.SetPassword(strings.TrimRight(string(b), "\r\n"))
	}
	if slices.ContainsFunc(brokers, func(b string) bool { return mqttconn.IsTLSURL(strings.TrimSpace(b)) }) {
		cfg, err := c.tls.Config()
		if err != nil {
			return nil, err
		}
		o.SetTLSConfig(cfg)
	}
	cl := paho.NewClient(o)
	tok := cl.Connect()
	// paho tries each node in turn, each for up to the connect timeout.
	if !tok.WaitTimeout(time.Duration(len(brokers))*fleetConnectTimeout+5*time.Second) || tok.Error() != nil {
		go cl.Disconnect(0) // an attempt still under way must not connect later
		return nil, fmt.Errorf("connect to %s: %v", c.broker, tok.Error())
	}
	return cl, nil
}

// fleetConnectTimeout bounds the connection to one broker.
const fleetConnectTimeout = 10 * time.Second

// subscribed waits for a subscription and returns an error when the
// broker did not take it: a SUBACK may refuse a filter (0x80), as a NATS
// node does while JetStream elects its leaders, and paho does not make
// that the token's error.
func subscribed(tok paho.Token, topic string) error {
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return fmt.Errorf("subscribe %s: %v", topic, tok.Error())
	}
	return mqttconn.Refused(tok)
}

func (c *fleetConn) match(device string) bool {
	for p := range strings.SplitSeq(c.devices, ",") {
		if ok, _ := path.Match(strings.TrimSpace(p), device); ok {
			return true
		}
	}
	return false
}

// dial connects to the broker and collects the devices' statuses (see
// statuses). The caller disconnects the client.
func (c *fleetConn) dial(ctx context.Context) (paho.Client, map[string]publish.Status, error) {
	cl, err := c.connect()
	if err != nil {
		return nil, nil, err
	}
	st, err := c.statuses(ctx, cl)
	if err != nil {
		cl.Disconnect(250)
		return nil, nil, err
	}
	return cl, st, nil
}

// statuses collects the retained status of every device matching --devices.
func (c *fleetConn) statuses(ctx context.Context, cl paho.Client) (map[string]publish.Status, error) {
	var mu sync.Mutex
	out := map[string]publish.Status{}
	topic := c.prefix + "/+/status"
	// QoS 0: the retained statuses come on a live connection of a clean
	// session, which QoS 1 would not make any surer, and a NATS node needs
	// JetStream (a consumer) for a QoS 1 subscription but not for QoS 0.
	tok := cl.Subscribe(topic, 0, func(_ paho.Client, m paho.Message) {
		var st publish.Status
		if json.Unmarshal(m.Payload(), &st) != nil || st.Device == "" || !c.match(st.Device) {
			return
		}
		mu.Lock()
		out[st.Device] = st
		mu.Unlock()
	})
	if err := subscribed(tok, topic); err != nil {
		return nil, err
	}
	select {
	case <-time.After(c.wait):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	cl.Unsubscribe(topic)
	mu.Lock()
	defer mu.Unlock()
	return out, nil
}

// fleetLine is one line of progress.
type fleetLine struct {
	Device string `json:"device"`
	State  string `json:"state"`
	Stored int    `json:"stored,omitempty"`
	Chunks int    `json:"chunks,omitempty"`
	Reason string `json:"reason,omitempty"`
	Models any    `json:"models,omitempty"`
}

type fleetOut struct {
	mu   sync.Mutex
	w    io.Writer
	json bool
}

func (o *fleetOut) line(l fleetLine) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.json {
		b, _ := json.Marshal(l)
		fmt.Fprintf(o.w, "%s\n", b)
		return
	}
	s := fmt.Sprintf("%-24s %s", l.Device, l.State)
	if l.Chunks > 0 {
		s += fmt.Sprintf(" %d/%d", l.Stored, l.Chunks)
	}
	if l.Reason != "" {
		s += ": " + l.Reason
	}
	if l.Models != nil {
		s += fmt.Sprintf(" %v", l.Models)
	}
	fmt.Fprintln(o.w, s)
}

func runFleetDeploy(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := NewFlags("fleet deploy", stderr)
	var c fleetConn
	c.flags(fs)
	model := fs.String("model", "", "DIR/NAME: the model to deploy, with DIR/NAME.sig from vigil model sign (required)")
	canary := fs.String("canary", "", "deploy to N devices (or P% of them) first and go on only if all of them serve the model")
	chunk := fs.Int("chunk-size", fleet.DefaultChunk, "chunk size in bytes before base64; keep base64 of it under the broker's message size limit")
	parallel := fs.Int("parallel", 4, "devices deployed to at once")
	poll := fs.Duration("poll", 2*time.Second, "how often to ask a device in its shadow run for its verdict")
	verdictTimeout := fs.Duration("verdict-timeout", 2*time.Hour, "longest wait for a shadow run's verdict")
	keyFile := fs.String("key", "", "private key (vigil model keygen) to sign the commands with; devices require it for deploy-model by default")
	if err := ParseFlags(fs, args); err != nil {
		return err
	}
	if c.broker == "" || *model == "" || fs.NArg() > 0 {
		return UsageError(fs, "vigil fleet deploy: give --broker and --model")
	}
	man, sig, tfl, err := fleet.ReadModel(*model)
	if err != nil {
		return err
	}
	m, err := models.DecodeManifest(man)
	if err != nil {
		return fmt.Errorf("%s.json: %w", *model, err)
	}
	if sig == nil {
		fmt.Fprintf(stderr, "warning: %s is unsigned: devices refuse it unless models.allow_unsigned is set\n", *model)
	}
	var key ed25519.PrivateKey
	if *keyFile != "" {
		b, err := os.ReadFile(*keyFile)
		if err != nil {
			return err
		}
		if key, err = models.ParsePrivateKey(string(b)); err != nil {
			return fmt.Errorf("%s: %w", *keyFile, err)
		}
	}
	cl, st, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer cl.Disconnect(250)
	var devices []string
	for d, s := range st {
		if s.State == "online" {
			devices = append(devices, d)
		}
	}
	sort.Strings(devices)
	if len(devices) == 0 {
		return fmt.Errorf("no online device matches %q under %s/", c.devices, c.prefix)
	}
	n, err := canaryCount(*canary, len(devices))
	if err != nil {
		return err
	}
	out := &fleetOut{w: stdout, json: c.jsonOut}
	deployAll := func(group []string) (failed int) {
		sem := make(chan struct{}, max(1, *parallel))
		var wg sync.WaitGroup
		var mu sync.Mutex
		for _, dev := range group {
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				s := &fleet.Sender{Client: cl, Topic: c.prefix + "/" + dev + "/cmd/deploy-model", ChunkSize: *chunk, Key: key,
					Progress: func(stored, total int) {
						out.line(fleetLine{Device: dev, State: "receiving", Stored: stored, Chunks: total})
					}}
				out.line(fleetLine{Device: dev, State: "sending"})
				res, err := s.Deploy(ctx, m.Name, m.Version, man, sig, tfl)
				l := fleetLine{Device: dev, State: "serving", Reason: res.Message}
				switch {
				case err != nil:
					l.State, l.Reason = "failed", err.Error()
				case strings.Contains(res.Message, "shadow run on stream"):
					out.line(fleetLine{Device: dev, State: "shadow", Reason: res.Message})
					l.State, l.Reason = waitVerdict(ctx, s, m.Name, m.Version, *poll, *verdictTimeout)
				case !strings.Contains(res.Message, "serving stream"):
					l.State = "failed" // landed but no stream serves it
				}
				if l.State != "serving" {
					mu.Lock()
					failed++
					mu.Unlock()
				}
				out.line(l)
			})
		}
		wg.Wait()
		return failed
	}
	if n > 0 && n < len(devices) {
		if failed := deployAll(devices[:n]); failed > 0 {
			for _, dev := range devices[n:] {
				out.line(fleetLine{Device: dev, State: "failed", Reason: "not attempted: a canary failed"})
			}
			return fmt.Errorf("%d of %d canaries do not serve %s@%s: stopped", failed, n, m.Name, m.Version)
		}
		devices = devices[n:]
	}
	if failed := deployAll(devices); failed > 0 {
		return fmt.Errorf("%d devices do not serve %s@%s", failed, m.Name, m.Version)
	}
	return nil
}

// waitVerdict polls a device in its shadow run until the verdict: it
// returns the final state (serving, rolled-back or failed) and the reason.
func waitVerdict(ctx context.Context, s *fleet.Sender, name, version string, poll, limit time.Duration) (string, string) {
	deadline := time.Now().Add(limit)
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		o, err := s.Outcome(ctx, name, version)
		switch {
		case err != nil:
			return "failed", err.Error()
		case strings.HasPrefix(o, "serving"):
			return "serving", o
		case strings.HasPrefix(o, "rolled-back"):
			return "rolled-back", o
		case strings.HasPrefix(o, "failed"), strings.HasPrefix(o, "landed"):
			return "failed", o
		}
		if time.Now().After(deadline) {
			return "failed", fmt.Sprintf("no shadow verdict within %v (%s)", limit, o)
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return "failed", ctx.Err().Error()
		}
	}
}

// canaryCount reads --canary: N or P% of total; 0 for none.
func canaryCount(s string, total int) (int, error) {
	if s == "" {
		return 0, nil
	}
	if p, ok := strings.CutSuffix(s, "%"); ok {
		f, err := strconv.ParseFloat(p, 64)
		if err != nil || f <= 0 || f > 100 {
			return 0, fmt.Errorf("--canary %q: want N or P%% with 0 < P <= 100", s)
		}
		return max(1, int(f*float64(total)/100)), nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("--canary %q: want N or P%%", s)
	}
	return n, nil
}

func runFleetStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := NewFlags("fleet status", stderr)
	var c fleetConn
	c.flags(fs)
	if err := ParseFlags(fs, args); err != nil {
		return err
	}
	if c.broker == "" || fs.NArg() > 0 {
		return UsageError(fs, "vigil fleet status: give --broker")
	}
	cl, st, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer cl.Disconnect(250)
	if len(st) == 0 {
		return fmt.Errorf("no device matches %q under %s/", c.devices, c.prefix)
	}
	names := make([]string, 0, len(st))
	for d := range st {
		names = append(names, d)
	}
	sort.Strings(names)
	out := &fleetOut{w: stdout, json: c.jsonOut}
	for _, d := range names {
		l := fleetLine{Device: d, State: st[d].State, Models: st[d].Models}
		if st[d].State == "online" {
			// The status command's reply names each stream's model and
			// threshold and where each came from.
			if msg, err := askStatus(ctx, cl, c.prefix+"/"+d+"/cmd/status"); err != nil {
				l.Reason = err.Error()
			} else {
				l.Reason = msg
			}
		}
		out.line(l)
	}
	return nil
}

func askStatus(ctx context.Context, cl paho.Client, topic string) (string, error) {
	id := fmt.Sprintf("fleet-status-%d", time.Now().UnixNano())
	got := make(chan fleet.Reply, 1)
	tok := cl.Subscribe(topic+"/reply", 0, func(_ paho.Client, m paho.Message) { // QoS 0: see statuses
		var r fleet.Reply
		if json.Unmarshal(m.Payload(), &r) == nil && r.ID == id {
			select {
			case got <- r:
			default:
			}
		}
	})
	if err := subscribed(tok, topic+"/reply"); err != nil {
		return "", err
	}
	defer cl.Unsubscribe(topic + "/reply")
	if tok := cl.Publish(topic, 1, false, fmt.Sprintf(`{"id":%q}`, id)); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return "", fmt.Errorf("the broker did not take the status command: %v", tok.Error())
	}
	select {
	case r := <-got:
		if !r.OK {
			return "", errors.New(r.Message)
		}
		return r.Message, nil
	case <-time.After(10 * time.Second):
		return "", errors.New("no reply to the status command")
	case <-ctx.Done():
		return "", ctx.Err()
	}
}
