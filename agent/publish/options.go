package publish

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/vigil-edge/vigil/agent/internal/mqttconn"
)

// TLSOptions configures TLS and mutual TLS to the broker. TLS is used when
// the broker URL's scheme is ssl, tls, mqtts or wss; these options are
// rejected with a plain tcp, mqtt or ws broker so that a certificate is never
// configured and silently unused. The publisher calls its Config at every
// connection attempt, so renewed certificates are picked up without a
// restart.
type TLSOptions = mqttconn.TLS

// Options configures a [Publisher]. Start from [DefaultOptions] and set at
// least Broker and Device.
type Options struct {
	// Broker is the broker URL: tcp://host:port (or mqtt://), ssl://,
	// tls:// or mqtts:// for TLS, ws:// or wss:// for websockets.
	Broker string
	// Brokers, when set instead of Broker, are the URLs of a clustered
	// broker's nodes: every connection attempt tries them in order, and the
	// publisher fails over to the next when one goes away. Status and
	// Stats name the broker in use.
	Brokers []string
	// PersistentSession connects with clean session off under the stable
	// client id, so that where a cluster keeps sessions, the command
	// subscription and the messages queued for it carry over a failover.
	PersistentSession bool
	// Device is the device id. It is a topic level, so it must not contain
	// '/', '+' or '#'.
	Device string
	// Prefix is the topic prefix; topics are <Prefix>/<Device>/...
	Prefix string
	// ClientID is the MQTT client id; empty means "vigil-<Device>". It must
	// be stable (the broker ends an older connection with the same id) and
	// unique per device.
	ClientID string
	// Username and Password authenticate to the broker. The password is a
	// secret: the publisher never logs it, and Options' String and
	// LogValue redact it.
	Username, Password string
	// TLS configures TLS and mutual TLS.
	TLS TLSOptions

	// Consumer is the publisher's consumer name in the buffer.
	Consumer string
	// ScoreQoS, AlertQoS and AdviceQoS are the QoS of each lane's messages,
	// 0 or 1. A QoS 1 record is acknowledged in the buffer on PUBACK, a QoS 0
	// one once written to the connection.
	ScoreQoS, AlertQoS, AdviceQoS byte
	// Shadow also publishes the buffer's shadow lane (record.LaneShadow:
	// what a model in its shadow run scored) on shadow/<stream>, at
	// ScoreQoS, like the scores. The buffer must have that lane.
	Shadow bool
	// InFlight bounds the messages of a lane sent and not yet acknowledged,
	// for live records and for the replay each (so a replay never holds up
	// live records).
	InFlight int
	// ReplayRate paces the backlog drained after an outage, in messages per
	// second over all lanes; 0 means unpaced. Live records are never paced.
	ReplayRate float64
	// ReplayBurst is how many backlog messages may go at once before the
	// pace applies.
	ReplayBurst int

	// KeepAlive is the MQTT keep-alive. A silent connection (a blackholed
	// network) is detected after at most KeepAlive plus PingTimeout.
	KeepAlive time.Duration
	// PingTimeout is how long to wait for a PINGRESP.
	PingTimeout time.Duration
	// ConnectTimeout bounds a connection attempt (dial, TLS, CONNACK).
	ConnectTimeout time.Duration
	// WriteTimeout bounds a write to the connection; a stalled write ends
	// the connection.
	WriteTimeout time.Duration
	// ReconnectMin and ReconnectMax bound the jittered exponential backoff
	// between connection attempts.
	ReconnectMin, ReconnectMax time.Duration
	// DrainTimeout bounds the clean shutdown: waiting for the PUBACKs of
	// messages in flight and for the retained "offline" status.
	DrainTimeout time.Duration

	// Version is the agent's version, published in the status.
	Version string
	// Models returns the loaded models (name@version) for the status; nil
	// means none.
	Models func() []string
	// StateDir holds the file that keeps the birth sequence number across
	// restarts (mqtt-birth-seq). Empty keeps it in memory only, so it
	// restarts at 1 with the process.
	StateDir string

	// StatusInterval is the period at which the retained "online" status
	// is published again while connected (and it is also published again
	// after a command subscription that the broker had refused): a
	// clustered broker may lose a retained message it acknowledged (NATS
	// during a JetStream election), and this brings it back. 0 publishes
	// it only at connect (and on rebirth).
	StatusInterval time.Duration

	// HealthInterval is the period of the health message; 0 disables it.
	HealthInterval time.Duration
	// Health returns the agent's health snapshot; it is marshalled to JSON
	// and published with the publisher's own stats under "mqtt". nil
	// publishes the publisher's stats only.
	Health func() any

	// Commands handles the remote commands; nil answers every command but
	// rebirth with an error.
	Commands Commands
	// Handlers carries out further commands by name (see CommandHandler).
	Handlers map[string]CommandHandler
	// Verify, if set, checks every known command's payload first.
	Verify CommandVerifier
	// CommandsEnabled subscribes to <prefix>/<device>/cmd/+. When false no
	// command is even received.
	CommandsEnabled bool
	// AllowCommands lists the commands accepted; empty allows all of
	// [CommandNames]. Others get an error reply.
	AllowCommands []string
	// CommandTimeout bounds one command's handler.
	CommandTimeout time.Duration

	// Logger receives the publisher's logs; nil discards them.
	Logger *slog.Logger
	// Now is the clock for timestamps; nil means time.Now.
	Now func() time.Time
}

// Defaults used by [DefaultOptions].
const (
	DefaultPrefix         = "vigil"
	DefaultConsumer       = "mqtt"
	DefaultInFlight       = 512
	DefaultReplayRate     = 1000
	DefaultReplayBurst    = 100
	DefaultKeepAlive      = 30 * time.Second
	DefaultPingTimeout    = 10 * time.Second
	DefaultConnectTimeout = 10 * time.Second
	DefaultWriteTimeout   = 10 * time.Second
	DefaultReconnectMin   = 500 * time.Millisecond
	DefaultReconnectMax   = 10 * time.Second
	DefaultDrainTimeout   = 3 * time.Second
	DefaultHealthInterval = 30 * time.Second
	DefaultStatusInterval = time.Minute
	DefaultCommandTimeout = 30 * time.Second
)

// maxInFlight keeps the message ids paho needs (two windows per lane, the
// status, replies and subscriptions) below MQTT's 65535.
const maxInFlight = 10000

// DefaultOptions returns the defaults: prefix "vigil", consumer "mqtt",
// scores at QoS 0 and alerts and advice at QoS 1, 512 messages in flight per
// lane, replay at 1000 messages/s, a 30 s keep-alive, health every 30 s and
// commands enabled.
func DefaultOptions() Options {
	return Options{
		Prefix:          DefaultPrefix,
		Consumer:        DefaultConsumer,
		ScoreQoS:        0,
		AlertQoS:        1,
		AdviceQoS:       1,
		InFlight:        DefaultInFlight,
		ReplayRate:      DefaultReplayRate,
		ReplayBurst:     DefaultReplayBurst,
		KeepAlive:       DefaultKeepAlive,
		PingTimeout:     DefaultPingTimeout,
		ConnectTimeout:  DefaultConnectTimeout,
		WriteTimeout:    DefaultWriteTimeout,
		ReconnectMin:    DefaultReconnectMin,
		ReconnectMax:    DefaultReconnectMax,
		DrainTimeout:    DefaultDrainTimeout,
		HealthInterval:  DefaultHealthInterval,
		StatusInterval:  DefaultStatusInterval,
		CommandsEnabled: true,
		CommandTimeout:  DefaultCommandTimeout,
	}
}

// String describes the options with the password redacted.
func (o Options) String() string {
	return fmt.Sprintf("broker=%s device=%s prefix=%s client_id=%s username=%s password=%s tls=%t",
		o.Broker, o.Device, o.Prefix, o.clientID(), o.Username, redact(o.Password), o.TLS.Set())
}

// LogValue implements slog.LogValuer with the password redacted.
func (o Options) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("broker", o.Broker),
		slog.String("device", o.Device),
		slog.String("prefix", o.Prefix),
		slog.String("client_id", o.clientID()),
		slog.String("username", o.Username),
		slog.String("password", redact(o.Password)),
		slog.Bool("tls", o.TLS.Set()),
	)
}

func redact(s string) string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// brokers are the broker URLs in the order they are tried.
func (o Options) brokers() []string {
	if len(o.Brokers) > 0 {
		return o.Brokers
	}
	if o.Broker == "" {
		return nil
	}
	return []string{o.Broker}
}

func (o Options) clientID() string {
	if o.ClientID != "" {
		return o.ClientID
	}
	return "vigil-" + o.Device
}

// validate checks o and reports every problem at once, each naming its
// field.
func (o *Options) validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("Options.%s: %s", field, fmt.Sprintf(format, args...)))
	}
	switch {
	case o.Broker != "" && len(o.Brokers) > 0:
		bad("Brokers", "set together with Broker: set one or the other")
	case len(o.brokers()) == 0:
		bad("Broker", "required (e.g. tcp://127.0.0.1:1883)")
	}
	for i, b := range o.brokers() {
		field := "Broker"
		if len(o.Brokers) > 0 {
			field = fmt.Sprintf("Brokers[%d]", i)
		}
		u, err := url.Parse(b)
		if err != nil {
			bad(field, "%v", err)
			continue
		}
		switch {
		case !mqttconn.Known(u.Scheme):
			bad(field, "unknown scheme %q in %q: want one of %s", u.Scheme, b, strings.Join(mqttconn.Schemes(), ", "))
		case !mqttconn.IsTLS(u.Scheme) && o.TLS.Set():
			bad("TLS", "set, but the broker URL's scheme %q is not a TLS one (use ssl://, mqtts:// or wss://)", u.Scheme)
		}
		if u.Host == "" {
			bad(field, "%q has no host:port", b)
		}
		if u.User != nil {
			bad(field, "credentials in the URL are not supported (and would be logged): set Username and Password")
		}
	}
	if err := checkLevel(o.Device); err != "" {
		bad("Device", "%q %s", o.Device, err)
	}
	if o.Prefix == "" {
		bad("Prefix", "required")
	} else {
		for _, lvl := range strings.Split(o.Prefix, "/") {
			if err := checkLevel(lvl); err != "" {
				bad("Prefix", "%q: level %q %s", o.Prefix, lvl, err)
				break
			}
		}
	}
	if id := o.clientID(); len(id) > 65535 || !utf8.ValidString(id) || strings.ContainsFunc(id, unicode.IsControl) {
		bad("ClientID", "%q must be valid UTF-8 without control characters", id)
	}
	if (o.TLS.CertFile == "") != (o.TLS.KeyFile == "") {
		bad("TLS", "CertFile and KeyFile go together: set both or neither")
	}
	if o.TLS.Set() {
		if _, err := o.TLS.Config(); err != nil {
			bad("TLS", "%v", err)
		}
	}
	if o.Consumer == "" {
		bad("Consumer", "required")
	}
	for name, q := range map[string]byte{"ScoreQoS": o.ScoreQoS, "AlertQoS": o.AlertQoS, "AdviceQoS": o.AdviceQoS} {
		if q > 1 {
			bad(name, "must be 0 or 1, got %d (QoS 2 is not supported)", q)
		}
	}
	if o.InFlight < 1 || o.InFlight > maxInFlight {
		bad("InFlight", "must be between 1 and %d, got %d", maxInFlight, o.InFlight)
	}
	if o.ReplayRate < 0 {
		bad("ReplayRate", "must not be negative, got %v", o.ReplayRate)
	}
	if o.ReplayRate > 0 && o.ReplayBurst < 1 {
		bad("ReplayBurst", "must be at least 1 when ReplayRate is set, got %d", o.ReplayBurst)
	}
	if o.KeepAlive < time.Second {
		bad("KeepAlive", "must be at least 1s, got %v", o.KeepAlive)
	}
	positive := map[string]time.Duration{
		"PingTimeout": o.PingTimeout, "ConnectTimeout": o.ConnectTimeout, "WriteTimeout": o.WriteTimeout,
		"ReconnectMin": o.ReconnectMin, "ReconnectMax": o.ReconnectMax, "DrainTimeout": o.DrainTimeout,
		"CommandTimeout": o.CommandTimeout,
	}
	for _, name := range slices.Sorted(maps.Keys(positive)) {
		if positive[name] <= 0 {
			bad(name, "must be positive, got %v", positive[name])
		}
	}
	if o.ReconnectMax < o.ReconnectMin {
		bad("ReconnectMax", "%v is below ReconnectMin %v", o.ReconnectMax, o.ReconnectMin)
	}
	if o.HealthInterval < 0 {
		bad("HealthInterval", "must not be negative, got %v", o.HealthInterval)
	}
	if o.StatusInterval < 0 {
		bad("StatusInterval", "must not be negative, got %v", o.StatusInterval)
	}
	for _, c := range o.AllowCommands {
		if !slices.Contains(CommandNames, c) && o.Handlers[c] == nil {
			bad("AllowCommands", "unknown command %q (known: %s)", c, strings.Join(CommandNames, ", "))
		}
	}
	if len(errs) > 0 {
		// Sort for a stable message: the QoS map iterates in random order.
		slices.SortFunc(errs, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
		return fmt.Errorf("publish: invalid options: %w", errors.Join(errs...))
	}
	return nil
}

// checkLevel returns why s cannot be a topic level, or "".
func checkLevel(s string) string {
	switch {
	case s == "":
		return "must not be empty"
	case strings.ContainsAny(s, "/+#"):
		return "must not contain '/', '+' or '#'"
	case !utf8.ValidString(s) || strings.ContainsFunc(s, unicode.IsControl):
		return "must be valid UTF-8 without control characters"
	}
	return ""
}
