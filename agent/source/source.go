// Package source holds Vigil's inputs: the simulator, CSV/JSONL replay, MQTT
// subscriptions on the local bus and the HTTP endpoint for user-behaviour
// events. Every source turns what it reads into Inputs and hands them to a
// Sink; none of them knows about models, windows or the buffer.
//
// Each source is built from its own options (NewSimulator,
// NewKioskSimulator, NewReplay, NewMQTT, NewHTTPEvents, each with a
// Default…Options) and has Name() and Run(ctx) error, which returns nil when
// ctx ends. Sources that may block (simulators, replay) use Sink.Put; those
// that must not (the MQTT callback, the HTTP handler) use TryPut and count
// what they drop. The decoders they share — PayloadDecoder for JSON
// samples, ReadCSV for CSV files (also used for evaluation on SKAB) — are
// exported for the rest of the daemon.
package source

import (
	"context"
	"time"
)

// Input is one thing a source read: a multichannel sensor sample (Values) or
// a user-behaviour event (Event).
type Input struct {
	// Source is the name of the source that produced the input.
	Source string
	// Stream is the stream the input is for, when the source decides it
	// (by topic, by a field, or by configuration); empty lets the router
	// route by source.
	Stream string
	// Time is when the sample was taken or the event happened.
	Time time.Time
	// Channels names Values in order. Sources share one slice between all
	// the samples of a stream; receivers must not modify it.
	Channels []string
	// Values are the sample's channel values, in the order of Channels.
	Values []float64
	// Event is set for behaviour events instead of Values.
	Event *Event
	// ID is the sample's message id, when its payload has one: a sample
	// with the id of one the stream took recently is a duplicate. Without
	// an id, a duplicate is a sample with the time and the values of one
	// the stream took; samples that only share a time are all kept.
	ID string
}

// Event is a user-behaviour event, as posted by a kiosk page to
// POST /v1/events or published on the bus.
type Event struct {
	ID         string         `json:"event_id"`
	Name       string         `json:"event_name"`
	Time       time.Time      `json:"-"`
	UserID     string         `json:"user_id"`
	Properties map[string]any `json:"properties,omitempty"`
}

// Sink receives a source's inputs. Put blocks until the input is accepted or
// ctx ends (replay and the simulator use it: back-pressure); TryPut never
// blocks and reports false when the pipeline is full, so a source that must
// not block (an MQTT callback, an HTTP handler) can count the drop or answer
// "busy".
type Sink interface {
	Put(ctx context.Context, in Input) error
	TryPut(in Input) bool
}

// DropReason names why an input was not accepted; sources count drops by
// reason so that nothing is lost silently.
type DropReason string

// Drop reasons shared by the sources and the pipeline.
const (
	DropInvalid      DropReason = "invalid"       // not decodable, or a field of the wrong type
	DropNonFinite    DropReason = "non_finite"    // NaN or ±Inf
	DropMissing      DropReason = "missing_field" // a mapped field is absent
	DropUnknown      DropReason = "unknown_stream"
	DropDuplicate    DropReason = "duplicate"
	DropLate         DropReason = "late"
	DropOutOfOrder   DropReason = "out_of_order"
	DropQueueFull    DropReason = "queue_full"
	DropUnauthorized DropReason = "unauthorized"
	DropRetained     DropReason = "retained" // a retained MQTT message the source does not take
	DropFuture       DropReason = "future"   // stamped further ahead of the clock than allowed
)

// Counter counts drops by reason. The pipeline's metrics implement it.
type Counter interface {
	Drop(source string, reason DropReason, n int)
}
