// Package forward holds what Vigil's forwarders share: the states they
// report, the dead-letter record they store for a permanent failure, the
// backoff policy of their retries and the clock they wait on.
//
// The forwarders themselves live in the sub-packages amplitude (alerts and
// advice to Amplitude as events) and dify (alerts to a Dify workflow, whose
// outputs come back as advice). Both are consumers of the buffer: they read
// records, deliver them, and acknowledge a record only once it was delivered
// or a permanent failure was recorded as a dead letter.
//
// What the wiring must provide: a buffer with the lanes alert, advice,
// LaneDeadLetter and dify.LaneJournal (the last two sync, like alert), and
// the consumers amplitude.Consumer and dify.Consumer registered on
// amplitude.Lanes() and dify.Lanes() before the sources start, so that no
// record is acknowledged by the others and deleted before a forwarder has
// seen it.
package forward

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/clock"
	"github.com/vigil-edge/vigil/agent/internal/throttle"
	"github.com/vigil-edge/vigil/buffer"
)

// LaneDeadLetter is the buffer lane where forwarders store dead letters
// unless they are given another [DeadLetterStore]. The buffer must be
// configured with it.
const LaneDeadLetter = "deadletter"

// State is the health of a forwarder, as health reports and /metrics show.
type State string

// States of a forwarder.
const (
	// StateOK: deliveries succeed (or there is nothing to deliver).
	StateOK State = "ok"
	// StateRetrying: the last attempt failed temporarily (network, 5xx);
	// the forwarder retries with backoff.
	StateRetrying State = "retrying"
	// StateThrottled: the service asked the forwarder to slow down (429);
	// some or all deliveries wait.
	StateThrottled State = "throttled"
	// StateFailing: the service refuses the forwarder permanently (an
	// invalid API key, a malformed request). Nothing is delivered until the
	// configuration is fixed; the records stay in the buffer.
	StateFailing State = "failing"
)

// Gauge returns the state as a number for /metrics: ok 0, retrying 1,
// throttled 2, failing 3.
func (s State) Gauge() int {
	switch s {
	case StateRetrying:
		return 1
	case StateThrottled:
		return 2
	case StateFailing:
		return 3
	}
	return 0
}

// DeadLetter records a record that a forwarder gave up on for good, and
// why. It holds what was sent (never the API key).
type DeadLetter struct {
	// ID is stable for a record and a consumer: consumer/lane/record id.
	ID string `json:"id"`
	// TS is when the forwarder gave up.
	TS time.Time `json:"ts"`
	// Consumer is the forwarder: amplitude or dify.
	Consumer string `json:"consumer"`
	// Lane and Seq locate the record in the buffer.
	Lane string `json:"lane"`
	Seq  uint64 `json:"seq"`
	// RecordID is the id of the alert or advice, when it could be decoded.
	RecordID string `json:"record_id,omitempty"`
	// Status is the HTTP status of the refusal, 0 when no request was made.
	Status int `json:"status,omitempty"`
	// Code is the service's error code (Dify's code, Amplitude's field).
	Code string `json:"code,omitempty"`
	// Reason says why, in words.
	Reason string `json:"reason"`
	// Event is what the forwarder sent or would have sent, if anything.
	Event json.RawMessage `json:"event,omitempty"`
}

// DeadLetterStore keeps dead letters. A forwarder acknowledges a record it
// gave up on only after StoreDeadLetter returned nil.
type DeadLetterStore interface {
	StoreDeadLetter(ctx context.Context, d DeadLetter) error
}

// Appender is the part of the buffer that BufferDeadLetters needs.
type Appender interface {
	Append(ctx context.Context, lane string, data ...[]byte) ([]uint64, error)
}

// BufferDeadLetters stores dead letters as JSON records of the buffer lane
// [LaneDeadLetter].
type BufferDeadLetters struct{ Buffer Appender }

// StoreDeadLetter appends d to the dead-letter lane.
func (b BufferDeadLetters) StoreDeadLetter(ctx context.Context, d DeadLetter) error {
	data, err := json.Marshal(d)
	if err != nil {
		return fmt.Errorf("encode dead letter: %w", err)
	}
	if _, err := b.Buffer.Append(ctx, LaneDeadLetter, data); err != nil {
		return fmt.Errorf("store dead letter: %w", err)
	}
	return nil
}

// Buffer is what a forwarder needs of the buffer. *buffer.Badger and
// *buffer.Memory have it.
type Buffer interface {
	Read(consumer, lane string, max int) ([]buffer.Record, error)
	Ack(consumer, lane string, seqs ...uint64) error
	Notify(lane string) <-chan struct{}
	Append(ctx context.Context, lane string, data ...[]byte) ([]uint64, error)
}

// Register registers consumer on lanes if buf can (it has
// RegisterConsumer), as a forwarder does when it starts.
func Register(buf Buffer, consumer string, lanes ...string) error {
	r, ok := buf.(interface {
		RegisterConsumer(name string, lanes ...string) error
	})
	if !ok {
		return nil
	}
	return r.RegisterConsumer(consumer, lanes...)
}

// Deps are what a forwarder is given besides its settings (embedded in its
// Options); each has a default.
type Deps struct {
	// DeadLetters stores dead letters; nil means the buffer's lane
	// LaneDeadLetter.
	DeadLetters DeadLetterStore
	// HTTPClient makes the requests; nil means a client with the
	// forwarder's timeouts.
	HTTPClient *http.Client
	// Clock is the clock; nil means SystemClock.
	Clock Clock
	// Logger receives the forwarder's log; nil discards it.
	Logger *slog.Logger
}

// WithDefaults fills what d leaves unset: dead letters in buf's lane
// LaneDeadLetter, client, the system clock and a logger that discards; the
// logger names component.
func (d Deps) WithDefaults(buf Appender, client *http.Client, component string) Deps {
	if d.DeadLetters == nil {
		d.DeadLetters = BufferDeadLetters{Buffer: buf}
	}
	if d.HTTPClient == nil {
		d.HTTPClient = client
	}
	if d.Clock == nil {
		d.Clock = SystemClock{}
	}
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	d.Logger = d.Logger.With("component", component)
	return d
}

// Clock tells the time and makes timers. Forwarders take one so that tests
// run them on simulated time. It is the agent's one clock (see
// agent/internal/clock).
type Clock = clock.Clock

// Timer is the part of *time.Timer a forwarder uses.
type Timer = clock.Timer

// SystemClock is the real clock.
type SystemClock = clock.System

// Backoff is a capped, jittered exponential backoff: attempt n (from 1)
// waits a random time in [d/2, d] where d = min(Initial·2^(n-1), Max). It
// is the agent's one backoff (see agent/internal/throttle).
type Backoff = throttle.Backoff
