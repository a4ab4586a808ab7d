// Package config is Vigil's configuration: the Config type, its defaults, the
// strict YAML loader, the VIGIL_* environment mapping, and validation that
// reports every problem at once with its key path.
//
// A configuration is built in layers, each overriding the one before:
//
//  1. Default() — every key has a default except device_id;
//  2. the YAML file, decoded strictly: an unknown key, a duplicate key or a
//     value of the wrong type is an error with its key path and line;
//  3. environment variables: every scalar key has one, "VIGIL_" + the key path
//     upper-cased with "." replaced by "_" (mqtt.broker → VIGIL_MQTT_BROKER);
//     lists of strings take comma-separated values; the sources and streams
//     lists and the string maps are file-only; an empty variable is ignored;
//  4. flags, which the caller applies with Set or Apply using the same key
//     paths and the same parsing as the environment.
//
// Then Validate checks the result and returns all errors and warnings. Load
// does layers 1–3; Check does Load and Validate for `vigil check-config`.
//
// Relative paths in the file, and in the defaults when a file is loaded, are
// resolved against the directory of the config file (as Prometheus does);
// relative paths from the environment or flags are left as given, relative to
// the working directory.
//
// Secrets (mqtt.password, http.token, amplitude.api_key, dify.api_key) have
// the Secret type, which never prints its value, and a *_file twin from which
// the secret is read instead.
package config

import (
	"time"

	"github.com/vigil-edge/vigil/agent/forward/amplitude"
	"github.com/vigil-edge/vigil/agent/forward/dify"
	"github.com/vigil-edge/vigil/agent/publish"
	"github.com/vigil-edge/vigil/models/shift"
)

// Config is Vigil's whole configuration. The yaml tag of each field is its key;
// the doc tag is its one-line description in the generated reference.
type Config struct {
	DeviceID  string    `yaml:"device_id" doc:"this device's id: required, at least 5 characters (Amplitude's minimum id length), letters, digits, '.', '_' and '-'; used in MQTT topics, record ids and Amplitude events"`
	DataDir   string    `yaml:"data_dir" conf:"path" doc:"directory for the durable buffer and learned models; created if missing"`
	ModelsDir string    `yaml:"models_dir" conf:"path" doc:"directory where a stream's model NAME is found as NAME.tflite and NAME.json"`
	Log       Log       `yaml:"log"`
	HTTP      HTTP      `yaml:"http"`
	Inference Inference `yaml:"inference"`
	Buffer    Buffer    `yaml:"buffer"`
	MQTT      MQTT      `yaml:"mqtt"`
	Health    Health    `yaml:"health"`
	Sources   []Source  `yaml:"sources" doc:"where samples and events come from (file only)"`
	Streams   []Stream  `yaml:"streams" doc:"what is scored: each stream reads one source with one model (file only)"`
	Amplitude Amplitude `yaml:"amplitude"`
	Dify      Dify      `yaml:"dify"`
	Models    Models    `yaml:"models"`

	// where records, per key path, where its value came from ("line 12",
	// "VIGIL_MQTT_BROKER"), so problems can point at it.
	where map[string]string
}

// Log configures logging.
type Log struct {
	Level  string `yaml:"level" doc:"minimum level: debug, info, warn or error"`
	Format string `yaml:"format" doc:"text or json"`
}

// HTTP configures the local HTTP server: POST /v1/events for http sources,
// GET /healthz and GET /metrics.
type HTTP struct {
	Listen           string        `yaml:"listen" doc:"host:port to listen on; loopback unless you mean it (port 0 picks a free port)"`
	CORSOrigins      []string      `yaml:"cors_origins" doc:"origins allowed to POST events from a browser (CORS, preflight included); \"*\" allows any"`
	MaxBodyBytes     ByteSize      `yaml:"max_body_bytes" doc:"largest request body accepted"`
	Token            Secret        `yaml:"token" doc:"bearer token that POST /v1/events requires when set"`
	TokenFile        string        `yaml:"token_file" conf:"path" doc:"file holding the token instead"`
	MaxClockSkew     time.Duration `yaml:"max_clock_skew" doc:"events stamped further ahead of this device's clock are refused with 400 and counted as future (one stamped in year 2999 would make the user's real events late); 0 turns the check off"`
	Durable          bool          `yaml:"durable" doc:"false: a 202 from POST /v1/events means the events are valid and queued in memory for scoring (normally scored within milliseconds), and a crash or power loss before that loses them; true: they are fsynced to a journal under data_dir before the 202 and replayed on start, so none is lost (events of the last one to two journal_retention periods before a crash are scored again)"`
	JournalRetention time.Duration `yaml:"journal_retention" doc:"with durable: how long an accepted event stays in the journal (one to two periods); longer than the pipeline ever takes to score an event"`
	// AllowQueryToken exists for navigator.sendBeacon, which cannot set
	// headers; a token in a URL leaks into browser history, proxy and
	// server logs.
	AllowQueryToken bool `yaml:"allow_query_token" doc:"also accept the token as ?token=<token> in the URL (for navigator.sendBeacon, which cannot set headers); off by default because a URL, token included, ends up in browser history and proxy logs"`

	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout" doc:"longest a client may take to send a request's header"`
	ReadTimeout       time.Duration `yaml:"read_timeout" doc:"longest a client may take to send a whole request, body included; a slower body is cut off"`
	WriteTimeout      time.Duration `yaml:"write_timeout" doc:"longest from the end of a request's header to the end of its response"`
	IdleTimeout       time.Duration `yaml:"idle_timeout" doc:"an idle keep-alive connection is closed after this long"`
	MaxConnections    int           `yaml:"max_connections" doc:"most connections open at once; further ones wait to be accepted until one closes"`
}

// Inference configures the scorer pool.
type Inference struct {
	Workers   int           `yaml:"workers" doc:"scoring workers, one interpreter each; 0 means one per CPU"`
	Threads   int           `yaml:"threads" doc:"TFLite threads per interpreter"`
	XNNPACK   bool          `yaml:"xnnpack" doc:"use the XNNPACK delegate when the runtime has it"`
	MaxBatch  int           `yaml:"max_batch" doc:"most windows scored in one call, across streams"`
	BatchWait time.Duration `yaml:"batch_wait" doc:"longest a window waits for a batch to fill"`
}

// Buffer configures the durable local log.
type Buffer struct {
	Kind           string        `yaml:"kind" doc:"badger (on disk under data_dir) or memory (lost on restart; tests and demos)"`
	MemoryBudget   ByteSize      `yaml:"memory_budget" doc:"memory Badger may use for tables and caches"`
	MaxBytes       ByteSize      `yaml:"max_bytes" doc:"cap on the bytes of all lanes together; beyond it each lane's on_full applies"`
	MaxRecordBytes ByteSize      `yaml:"max_record_bytes" doc:"largest single record; larger ones are rejected and counted"`
	SyncInterval   time.Duration `yaml:"sync_interval" doc:"how often lanes with durability batched are synced to disk"`
	GCInterval     time.Duration `yaml:"gc_interval" doc:"how often Badger's value log is garbage-collected"`
	Lanes          Lanes         `yaml:"lanes"`
}

// Lanes configures each lane of the buffer.
type Lanes struct {
	Score  Lane `yaml:"score"`
	Alert  Lane `yaml:"alert"`
	Advice Lane `yaml:"advice"`
}

// Lane configures one lane of the buffer.
type Lane struct {
	Priority   int           `yaml:"priority" doc:"higher drains first after an outage and is evicted last"`
	Durability string        `yaml:"durability" doc:"sync (fsync before the append returns) or batched (synced every buffer.sync_interval)"`
	MaxBytes   ByteSize      `yaml:"max_bytes" doc:"cap on this lane's bytes; 0 means only buffer.max_bytes applies"`
	OnFull     string        `yaml:"on_full" doc:"at the cap: evict (drop the oldest records, counted) or reject (refuse new records, counted)"`
	TTL        time.Duration `yaml:"ttl" doc:"records older than this are dropped even if unacknowledged; 0 keeps them"`
}

// MQTT configures the connection to the broker that Vigil publishes to and is
// managed through.
type MQTT struct {
	Broker            string         `yaml:"broker" doc:"broker URL: tcp://host:1883, ssl://host:8883, ws://host/mqtt, wss://...; empty means the embedded broker when mqtt.embedded_broker.listen is set, else MQTT is off"`
	Brokers           []string       `yaml:"brokers" doc:"the nodes of a clustered broker, instead of mqtt.broker: tried in order at each connection attempt, so the agent fails over to the next when one goes away"`
	PersistentSession bool           `yaml:"persistent_session" doc:"connect with clean session off under the stable client id, so a cluster that keeps sessions carries the command subscription over a failover"`
	ClientID          string         `yaml:"client_id" doc:"MQTT client id; empty means vigil-<device_id>"`
	Username          string         `yaml:"username" doc:"user name for the broker"`
	Password          Secret         `yaml:"password" doc:"password for the broker"`
	PasswordFile      string         `yaml:"password_file" conf:"path" doc:"file holding the password instead"`
	TLS               TLS            `yaml:"tls"`
	Prefix            string         `yaml:"prefix" doc:"topic prefix: topics are <prefix>/<device_id>/..."`
	KeepAlive         time.Duration  `yaml:"keepalive" doc:"MQTT keep-alive; a dead connection is detected within about 1.5x this"`
	ConnectTimeout    time.Duration  `yaml:"connect_timeout" doc:"timeout of one connection attempt"`
	QoS               QoS            `yaml:"qos"`
	MaxInflight       int            `yaml:"max_inflight" doc:"most QoS 1 messages awaiting PUBACK"`
	ReplayRate        int            `yaml:"replay_rate" doc:"backlog messages per second after an outage (new messages go first, unpaced); 0 means unpaced"`
	StatusInterval    time.Duration  `yaml:"status_interval" doc:"how often the retained online status is published again while connected (a clustered broker may lose a retained message while it elects leaders); 0 means only once per connection"`
	ReconnectMax      time.Duration  `yaml:"reconnect_max" doc:"longest wait between connection attempts while the broker is unreachable (jittered exponential backoff from 0.5s): what an outage adds to the delivery of the backlog once the broker is back"`
	EmbeddedBroker    EmbeddedBroker `yaml:"embedded_broker"`
	Commands          Commands       `yaml:"commands"`
}

// TLS configures TLS for the broker connection; it applies to ssl://, tls://,
// mqtts:// and wss:// brokers.
type TLS struct {
	CAFile             string `yaml:"ca_file" conf:"path" doc:"PEM file of CAs to verify the broker with; empty means the system roots"`
	CertFile           string `yaml:"cert_file" conf:"path" doc:"PEM client certificate for mutual TLS (needs key_file)"`
	KeyFile            string `yaml:"key_file" conf:"path" doc:"PEM private key of cert_file"`
	ServerName         string `yaml:"server_name" doc:"name to verify the broker's certificate against; empty means the broker URL's host"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify" doc:"do not verify the broker's certificate (tests only)"`
}

// QoS sets the MQTT QoS per lane.
type QoS struct {
	Score  int `yaml:"score" doc:"QoS of scores/<stream> (0, 1 or 2)"`
	Alert  int `yaml:"alert" doc:"QoS of alerts/<stream>; 1 or 2 so an alert is acknowledged only on PUBACK"`
	Advice int `yaml:"advice" doc:"QoS of advice/<alert_id>"`
}

// EmbeddedBroker configures the optional in-process MQTT broker.
type EmbeddedBroker struct {
	Listen string `yaml:"listen" doc:"host:port for an in-process broker (e.g. 127.0.0.1:1883) so the device needs no mosquitto; empty means none"`
}

// Commands configures remote commands on <prefix>/<device_id>/cmd/<name>.
type Commands struct {
	Enabled bool     `yaml:"enabled" doc:"accept commands over MQTT"`
	Allow   []string `yaml:"allow" doc:"commands accepted: reload, set-threshold, rebirth, flush, status, relearn, reset, deploy-model, rollback, promote"`
	// RequireSignature lists the commands that must come signed by a key
	// of models.trusted_keys (see agent/fleet, signed.go).
	RequireSignature []string `yaml:"require_signature" doc:"commands that must carry an ed25519 signature by a key of models.trusted_keys over payload, time and nonce (vigil fleet signs with --key); stale and replayed ones are refused"`
}

// Models configures the models that reach the device over MQTT
// (deploy-model): whose signatures it trusts.
type Models struct {
	TrustedKeys   []string `yaml:"trusted_keys" conf:"keys" doc:"ed25519 public keys whose signature a deployed model must carry: each the base64 line of a NAME.pub (vigil model keygen), or @path to such a file"`
	AllowUnsigned bool     `yaml:"allow_unsigned" doc:"accept a deployed model that is unsigned or signed by a key not trusted (a signature that does not verify is refused regardless)"`
	Shadow        Shadow   `yaml:"shadow"`
}

// Shadow configures the shadow run of a deployed model: it scores the same
// windows beside the serving model before it serves. Off when both windows
// and duration are zero.
type Shadow struct {
	Windows       int           `yaml:"windows" doc:"windows the shadow run scores before its verdict; 0: duration alone decides"`
	Duration      time.Duration `yaml:"duration" doc:"longest shadow run (the verdict comes at windows or duration, whichever first); 0: windows alone decide"`
	MaxAlertRate  float64       `yaml:"max_alert_rate" doc:"promotion bound: the deployed model's share of windows over its threshold may be at most this, or max_alert_ratio times the serving model's, whichever is higher"`
	MaxAlertRatio float64       `yaml:"max_alert_ratio" doc:"promotion bound relative to the serving model's share of windows over threshold"`
}

// Health configures the health heartbeat.
type Health struct {
	Interval time.Duration `yaml:"interval" doc:"how often the health message is published"`
}

// Source types.
const (
	SourceSimulator = "simulator"
	SourceMQTT      = "mqtt"
	SourceHTTP      = "http"
	SourceReplay    = "replay"
)

// Source is one input. Name and Type are required; the block named after the
// type holds its settings (http sources have none: they serve POST /v1/events
// on http.listen).
type Source struct {
	Name      string           `yaml:"name" doc:"name that streams refer to"`
	Type      string           `yaml:"type" doc:"simulator, mqtt, http or replay"`
	Simulator *SimulatorSource `yaml:"simulator,omitempty"`
	MQTT      *MQTTSource      `yaml:"mqtt,omitempty"`
	Replay    *ReplaySource    `yaml:"replay,omitempty"`
}

// SimulatorSource is a demo pump with 8 correlated channels and kiosk users
// whose sessions sometimes fail in bursts.
type SimulatorSource struct {
	Rate          float64       `yaml:"rate" doc:"pump samples per second"`
	Faults        bool          `yaml:"faults" doc:"inject faults (valve closing, cavitation, drift, stuck sensor) and failure bursts"`
	FaultInterval time.Duration `yaml:"fault_interval" doc:"mean time between injected faults"`
	Seed          int64         `yaml:"seed" doc:"random seed; the same seed gives the same data"`
	Users         int           `yaml:"users" doc:"simulated kiosk users sending behaviour events; 0 for none"`
}

// MQTTSource subscribes to topics on a broker and decodes JSON samples.
type MQTTSource struct {
	Broker       string            `yaml:"broker" doc:"broker URL; empty means the one Vigil publishes to (mqtt.broker or mqtt.brokers, or the embedded broker), with mqtt's credentials and TLS"`
	Brokers      []string          `yaml:"brokers" doc:"the nodes of a clustered broker, instead of broker: tried in order at each connection attempt"`
	CleanSession *bool             `yaml:"clean_session" doc:"false keeps a persistent session under the source's stable client id: with qos 1 the broker (or a cluster, across a failover) keeps what arrives while Vigil is away; default true"`
	Topics       []string          `yaml:"topics" doc:"topic filters to subscribe to (+ and # wildcards)"`
	QoS          int               `yaml:"qos" doc:"subscription QoS"`
	Format       string            `yaml:"format" doc:"json (sensor samples decoded with fields) or events (behaviour events: {event_id, event_name, timestamp, user_id, properties} or an array of them)"`
	Fields       Fields            `yaml:"fields"`
	StreamFrom   string            `yaml:"stream_from" doc:"how a message finds its stream: topic (see stream_map), or field:<name> for the string value of a payload field"`
	StreamMap    map[string]string `yaml:"stream_map" doc:"topic or topic filter (+, #) → stream name; a topic without an entry goes to the only stream reading this source, or, when several do, to the stream named by the topic's last level"`
	MaxClockSkew time.Duration     `yaml:"max_clock_skew" doc:"samples and events stamped further ahead of this device's clock are dropped and counted as future (one in year 2999 would make every later one late); 0 turns the check off"`
	Retained     string            `yaml:"retained" doc:"retained messages, which the broker delivers again at every connect and reload: ignore (dropped, counted as retained) or take (each taken once, with the time in its payload; one without a time field is dropped)"`
}

// Fields maps payload fields to a sample.
type Fields struct {
	Timestamp       string            `yaml:"timestamp" doc:"payload field with the sample time; empty means the arrival time"`
	TimestampFormat string            `yaml:"timestamp_format" doc:"auto (RFC 3339, 2006-01-02 15:04:05 or unix time with its unit guessed), unix, unix_ms, unix_us, unix_ns, rfc3339 or a Go layout"`
	ID              string            `yaml:"id" doc:"payload field with the message id (string or number): a message with the id of one of the stream's last 1024 is a duplicate; empty means a duplicate is a message with the time and values of one taken (messages that only share a time are all kept)"`
	Values          map[string]string `yaml:"values" doc:"channel name → payload field (dotted path); empty maps each channel of the fed streams' models to the top-level field of the same name"`
}

// ReplaySource streams a CSV or JSONL file, such as a SKAB recording.
type ReplaySource struct {
	Path            string   `yaml:"path" conf:"path" doc:"the file to replay (required)"`
	Format          string   `yaml:"format" doc:"csv or jsonl; empty means from the file extension"`
	Delimiter       string   `yaml:"delimiter" doc:"CSV field delimiter, one character; empty means detected from the header (, ; or tab)"`
	Speed           float64  `yaml:"speed" doc:"speed factor against the recorded timestamps: 1 is real time, 10 is ten times faster, 0 is as fast as possible"`
	TimestampColumn string   `yaml:"timestamp_column" doc:"column (or JSONL field) with the sample time; empty picks the first of datetime, timestamp, time, ts, date"`
	TimestampFormat string   `yaml:"timestamp_format" doc:"auto, unix, unix_ms, unix_us, unix_ns, rfc3339 or a Go layout"`
	Columns         []string `yaml:"columns" doc:"columns to read as channels, in this order; empty means every numeric column but the timestamp"`
	Stream          string   `yaml:"stream" doc:"stream that receives the samples; empty is allowed when exactly one stream reads this source"`
	Loop            bool     `yaml:"loop" doc:"start again at the end of the file"`
}

// Stream kinds.
const (
	KindSensor    = "sensor"
	KindBehaviour = "behaviour"
)

// Stream is one scored stream: a source, a model and the detection settings.
type Stream struct {
	Name        string        `yaml:"name" doc:"stream name, used in topics and alert ids: letters, digits, '.', '_' and '-'"`
	Source      string        `yaml:"source" doc:"name of the source it reads"`
	Kind        string        `yaml:"kind" doc:"sensor (numeric channels) or behaviour (user events, featurized per key)"`
	Model       string        `yaml:"model" doc:"model name: models_dir/NAME.tflite and models_dir/NAME.json (the manifest)"`
	Key         string        `yaml:"key" doc:"behaviour streams: the event field that keys the features, e.g. user_id"`
	Channels    []string      `yaml:"channels" doc:"sensor streams: the channel names expected, checked against the manifest's input channels; empty means take the manifest's"`
	Threshold   float64       `yaml:"threshold" doc:"anomaly threshold on the score; 0 means the manifest's calibrated threshold"`
	Hysteresis  Hysteresis    `yaml:"hysteresis"`
	Cooldown    time.Duration `yaml:"cooldown" doc:"after an episode ends, how long a new anomaly reopens it (an update) instead of opening a new episode; 0 means never"`
	Episode     Episode       `yaml:"episode"`
	Severity    Severity      `yaml:"severity"`
	TopFeatures int           `yaml:"top_features" doc:"contributing channels or features named in each alert"`
	StuckFactor int           `yaml:"stuck_factor" doc:"sensor streams: a channel that reads one value for this many times its longest run in the model's training data (and at least a window) is a stuck sensor, and its windows count as above the threshold; 0 turns the check off"`
	ShiftFactor float64       `yaml:"shift_factor" doc:"sensor streams: a window in which a channel's last samples (a sixth of the window) moved this many times as far from the rest as the most in the model's training data counts as above the threshold (a level shift); 0 turns the check off"`
	Learn       Learn         `yaml:"learn"`
	MaxLateness time.Duration `yaml:"max_lateness" doc:"samples older than the newest by more than this are dropped as late"`
}

// Hysteresis raises an alert when K of the last N windows are above the
// threshold.
type Hysteresis struct {
	K int `yaml:"k" doc:"windows above the threshold needed ..."`
	N int `yaml:"n" doc:"... among the last n windows"`
}

// Episode shapes the alert episodes of a stream.
type Episode struct {
	CloseAfter time.Duration `yaml:"close_after" doc:"an episode closes only after the stream has been normal this long; an anomaly within it continues the episode (counted as a suppressed flip); 0 closes at the first normal window"`
	// OrphanAfter: see package episodes.
	OrphanAfter time.Duration `yaml:"orphan_after" doc:"an episode the last run left open (a crash, a stop) closes when the stream moves past it, or when the stream (and the episode's key) has scored nothing this long after the start (a stream still learning counts as silent; the start's value holds until the next start; streams on a replay source always wait); 0 waits for the stream for ever"`
}

// Severity holds the bands of score/threshold at which an alert gets each
// severity; they must increase.
type Severity struct {
	Warning  float64 `yaml:"warning" doc:"score/threshold at or above which an alert is a warning"`
	Major    float64 `yaml:"major" doc:"score/threshold for major"`
	Critical float64 `yaml:"critical" doc:"score/threshold for critical"`
}

// Learn makes a stream learn its own baseline on the device before scoring.
type Learn struct {
	Samples int           `yaml:"samples" doc:"learn from the first N samples, then score with the learned model; 0 means use the model as shipped"`
	Budget  time.Duration `yaml:"budget" doc:"most training time allowed"`
	Arch    string        `yaml:"arch" doc:"architecture of the learned model: dense"`
	// DriftHorizon, CalibrateOn and ThresholdFactor are the settings
	// `vigil eval skab` found to generalise: see agent/eval/README.md.
	DriftHorizon    int     `yaml:"drift_horizon" doc:"samples of slow drift, continued from the warm-up's trend, that still count as normal in channels smoother than white noise (0 = none)"`
	CalibrateOn     string  `yaml:"calibrate_on" doc:"windows whose scores set the threshold: validation (the last 20% of the warm-up, held out from training), train or train+validation"`
	ThresholdFactor float64 `yaml:"threshold_factor" doc:"factor on the calibrated threshold of the learned model"`
	Quantize        string  `yaml:"quantize" doc:"int8 learns a full-integer model (int8 weights, activations, input and output; dense only); empty learns float32"`
}

// Severity names, lowest first.
var severityNames = []string{"warning", "major", "critical"}

// Amplitude configures the Amplitude forwarder.
type Amplitude struct {
	Enabled         Switch        `yaml:"enabled" doc:"auto (on when an API key is set), true or false"`
	Region          string        `yaml:"region" doc:"us or eu: picks Amplitude's host when endpoint is empty"`
	API             string        `yaml:"api" doc:"http (HTTP V2 API) or batch (Batch Event Upload API)"`
	Endpoint        string        `yaml:"endpoint" doc:"full URL to post to, overriding region and api (e.g. a proxy or a test double)"`
	APIKey          Secret        `yaml:"api_key" doc:"project API key"`
	APIKeyFile      string        `yaml:"api_key_file" conf:"path" doc:"file holding the API key instead"`
	MinSeverity     string        `yaml:"min_severity" doc:"lowest alert severity forwarded: warning, major or critical"`
	MinConfidence   float64       `yaml:"min_confidence" doc:"lowest alert confidence forwarded (1 − the chance a normal window scores as high, from the model's calibration); alerts without one are not forwarded when above 0; 0 forwards all"`
	FlushInterval   time.Duration `yaml:"flush_interval" doc:"longest an event waits before its batch is sent"`
	MaxBatch        int           `yaml:"max_batch" doc:"most events per request (at most 2000)"`
	Timeout         time.Duration `yaml:"timeout" doc:"timeout of one request"`
	MaxRetryBackoff time.Duration `yaml:"max_retry_backoff" doc:"cap of the exponential backoff between retries (retries go on while the buffer holds the events)"`
}

// Dify configures the Dify forwarder, which runs a workflow for each alert
// and stores the outputs as advice.
type Dify struct {
	Enabled         Switch            `yaml:"enabled" doc:"auto (on when an API key is set), true or false"`
	BaseURL         string            `yaml:"base_url" doc:"API base URL, cloud or self-hosted (e.g. http://dify.local/v1)"`
	APIKey          Secret            `yaml:"api_key" doc:"the workflow app's API key"`
	APIKeyFile      string            `yaml:"api_key_file" conf:"path" doc:"file holding the API key instead"`
	MinSeverity     string            `yaml:"min_severity" doc:"lowest alert severity sent: warning, major or critical"`
	MinConfidence   float64           `yaml:"min_confidence" doc:"lowest alert confidence sent (1 − the chance a normal window scores as high, from the model's calibration); alerts without one are not sent when above 0; 0 sends all"`
	ResponseMode    string            `yaml:"response_mode" doc:"blocking or streaming (streaming for workflows longer than 100 s)"`
	Timeout         time.Duration     `yaml:"timeout" doc:"timeout of one workflow run"`
	RateLimit       Rate              `yaml:"rate_limit" doc:"most runs per period for the whole device, e.g. 6/min; 0 means unlimited"`
	Cooldown        time.Duration     `yaml:"cooldown" doc:"least time between runs for one stream"`
	MaxConcurrency  int               `yaml:"max_concurrency" doc:"most runs in flight"`
	MaxRetryBackoff time.Duration     `yaml:"max_retry_backoff" doc:"cap of the backoff between retries after 429 and failures before sending"`
	User            string            `yaml:"user" doc:"the end-user id sent with each run; empty means vigil-<device_id>"`
	Inputs          map[string]string `yaml:"inputs" doc:"workflow input → text/template over the alert (see TemplateData); an input must contain {{.ID}} (file only)"`
}

// Default returns the default configuration. It is not valid as it is: the
// device id has no default.
func Default() *Config {
	// The forwarders own their defaults.
	amp, dfy := amplitude.DefaultOptions(), dify.DefaultOptions()
	return &Config{
		DataDir:   "/var/lib/vigil",
		ModelsDir: "models",
		Models:    Models{Shadow: Shadow{MaxAlertRate: 0.05, MaxAlertRatio: 2}},
		Log:       Log{Level: "info", Format: "text"},
		HTTP: HTTP{
			Listen:           "127.0.0.1:8787",
			MaxBodyBytes:     1 << 20,
			MaxClockSkew:     5 * time.Minute,
			JournalRetention: time.Minute,
			// As httpserve.DefaultOptions.
			ReadHeaderTimeout: 10 * time.Second,
			ReadTimeout:       30 * time.Second,
			WriteTimeout:      30 * time.Second,
			IdleTimeout:       60 * time.Second,
			MaxConnections:    128,
		},
		Inference: Inference{
			Threads:   1,
			MaxBatch:  64,
			BatchWait: 5 * time.Millisecond,
		},
		Buffer: Buffer{
			Kind:           "badger",
			MemoryBudget:   32 << 20,
			MaxBytes:       256 << 20,
			MaxRecordBytes: 1 << 20,
			SyncInterval:   100 * time.Millisecond,
			GCInterval:     time.Minute,
			Lanes: Lanes{
				Score:  Lane{Priority: 0, Durability: "batched", OnFull: "evict"},
				Alert:  Lane{Priority: 2, Durability: "sync", OnFull: "evict"},
				Advice: Lane{Priority: 1, Durability: "sync", OnFull: "evict"},
			},
		},
		MQTT: MQTT{
			Prefix:         "vigil",
			KeepAlive:      15 * time.Second,
			ConnectTimeout: 10 * time.Second,
			QoS:            QoS{Score: 0, Alert: 1, Advice: 1},
			MaxInflight:    256,
			ReplayRate:     2000,
			ReconnectMax:   10 * time.Second,
			StatusInterval: publish.DefaultStatusInterval,
			Commands:       Commands{Enabled: true, Allow: append([]string(nil), commandNames...), RequireSignature: []string{"deploy-model"}},
		},
		Health: Health{Interval: 10 * time.Second},
		Amplitude: Amplitude{
			Enabled:         Auto,
			Region:          amp.Region,
			API:             string(amp.API),
			MinSeverity:     amp.MinSeverity,
			FlushInterval:   amp.FlushInterval,
			MaxBatch:        amp.MaxBatch,
			Timeout:         amp.Timeout,
			MaxRetryBackoff: amp.Backoff.Max,
		},
		Dify: Dify{
			Enabled:         Auto,
			BaseURL:         dfy.BaseURL,
			MinSeverity:     dfy.MinSeverity,
			ResponseMode:    dfy.ResponseMode,
			Timeout:         dfy.Timeout,
			RateLimit:       Rate(dfy.RateLimit),
			Cooldown:        dfy.Cooldown,
			MaxConcurrency:  dfy.MaxConcurrency,
			MaxRetryBackoff: dfy.Backoff.Max,
			Inputs:          dfy.Inputs,
		},
	}
}

// defaultSource is what an unset key of a sources[] entry gets; a type block
// gets its defaults only when it is present (a simulator source without a
// block gets the whole default block).
func defaultSource() Source {
	return Source{
		Simulator: &SimulatorSource{Rate: 100, Faults: true, FaultInterval: 20 * time.Second, Seed: 1, Users: 20},
		MQTT:      &MQTTSource{QoS: 0, Format: "json", StreamFrom: "topic", Fields: Fields{TimestampFormat: "auto"}, Retained: "ignore", MaxClockSkew: 5 * time.Minute},
		Replay:    &ReplaySource{Speed: 1, TimestampFormat: "auto"},
	}
}

// defaultStream is what an unset key of a streams[] entry gets.
func defaultStream() Stream {
	return Stream{
		Kind:        KindSensor,
		Hysteresis:  Hysteresis{K: 2, N: 3},
		Episode:     Episode{CloseAfter: 5 * time.Second, OrphanAfter: 10 * time.Minute},
		Severity:    Severity{Warning: 1.0, Major: 1.5, Critical: 2.5},
		TopFeatures: 3,
		StuckFactor: 10,
		ShiftFactor: shift.DefaultFactor,
		Learn:       Learn{Budget: time.Minute, Arch: "dense", DriftHorizon: 1000, CalibrateOn: "validation", ThresholdFactor: 2.4},
		MaxLateness: 5 * time.Second,
	}
}

// commandNames are the remote commands Vigil knows.
var commandNames = []string{"reload", "set-threshold", "rebirth", "flush", "status", "relearn", "reset", "deploy-model", "rollback", "promote"}

// learnArchs are the architectures a stream can learn.
var learnArchs = []string{"dense"}
