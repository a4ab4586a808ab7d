package source

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"
)

// EventLimits bound a body of behaviour events and each event in it.
type EventLimits struct {
	// MaxEvents is the most events one body may hold.
	MaxEvents int
	// MaxStringLen is the longest event_id, event_name or user_id, in
	// bytes.
	MaxStringLen int
	// MaxProperties is the most top-level keys properties may have.
	MaxProperties int
	// MaxPropertiesBytes is the longest properties object, as sent.
	MaxPropertiesBytes int
	// MaxFuture is how far ahead of the clock an event's timestamp may be
	// (a client's clock runs ahead a little; year 2999 is a bug or an
	// attack, and would make the user's real events late). 0: no limit.
	MaxFuture time.Duration
}

// DefaultEventLimits returns the default limits: 500 events a body, strings
// up to 256 bytes, up to 64 properties in up to 8 KiB, timestamps at most
// 5 minutes ahead of the clock.
func DefaultEventLimits() EventLimits {
	return EventLimits{MaxEvents: 500, MaxStringLen: 256, MaxProperties: 64, MaxPropertiesBytes: 8 << 10, MaxFuture: DefaultMaxFuture}
}

// DefaultMaxFuture is how far ahead of the clock a timestamp may be by
// default.
const DefaultMaxFuture = 5 * time.Minute

// futureReason says why a time too far ahead of now is refused, or "" when
// it is not.
func futureReason(t, now time.Time, max time.Duration) string {
	if max <= 0 || t.Sub(now) <= max {
		return ""
	}
	ahead := t.Sub(now).Round(time.Second).String()
	if secs := t.Unix() - now.Unix(); secs > 2*86400 { // and t.Sub saturates past 292 years
		ahead = strconv.FormatInt(secs/86400, 10) + " days"
	}
	return fmt.Sprintf("%s is %s ahead of this device's clock (%s); at most %s ahead is accepted",
		t.UTC().Format(time.RFC3339), ahead, now.UTC().Format(time.RFC3339), max)
}

func (l EventLimits) validate(field string) error {
	var errs []error
	if l.MaxEvents < 1 {
		errs = append(errs, optErr(field+".MaxEvents", "must be ≥ 1, got %d", l.MaxEvents))
	}
	if l.MaxStringLen < 1 {
		errs = append(errs, optErr(field+".MaxStringLen", "must be ≥ 1, got %d", l.MaxStringLen))
	}
	if l.MaxProperties < 0 {
		errs = append(errs, optErr(field+".MaxProperties", "must be ≥ 0, got %d", l.MaxProperties))
	}
	if l.MaxPropertiesBytes < 2 {
		errs = append(errs, optErr(field+".MaxPropertiesBytes", "must be ≥ 2, got %d", l.MaxPropertiesBytes))
	}
	if l.MaxFuture < 0 {
		errs = append(errs, optErr(field+".MaxFuture", "must be ≥ 0, got %v", l.MaxFuture))
	}
	return errors.Join(errs...)
}

// Rejection says why one event of a body was not accepted.
type Rejection struct {
	// Index is the event's position in the body (0 for a single event).
	Index int `json:"index"`
	// EventID is the event's id, when it had a readable one.
	EventID string `json:"event_id,omitempty"`
	// Reason is a human-readable reason, naming the field at fault.
	Reason string `json:"reason"`
	// Drop is the reason's counter label.
	Drop DropReason `json:"-"`
}

// decodedEvent is a valid event and its position in the body.
type decodedEvent struct {
	index int
	event Event
}

// errEmptyBody and friends are whole-body problems.
var errEmptyBody = errors.New("empty body")

// decodeEvents decodes a body holding one event object or an array of them,
// in the shape {event_id, event_name, timestamp, user_id, properties}.
// Each event is validated on its own: valid events come back in evs, the
// others in rejected, so that a mixed batch is partly accepted. An error
// means the body as a whole is unusable (not JSON, neither an object nor an
// array, too many events). Events without a timestamp get now; events
// without an event_id get a random one.
func decodeEvents(body []byte, now time.Time, lim EventLimits) (evs []decodedEvent, rejected []Rejection, err error) {
	body = bytes.TrimPrefix(bytes.TrimSpace(body), []byte("\xef\xbb\xbf"))
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		return nil, nil, errEmptyBody
	}
	var raws []json.RawMessage
	switch body[0] {
	case '[':
		if err := json.Unmarshal(body, &raws); err != nil {
			return nil, nil, fmt.Errorf("body is not valid JSON: %w", err)
		}
		if len(raws) > lim.MaxEvents {
			return nil, nil, fmt.Errorf("too many events: %d > %d", len(raws), lim.MaxEvents)
		}
	case '{':
		if !json.Valid(body) {
			var v any
			err := json.Unmarshal(body, &v)
			return nil, nil, fmt.Errorf("body is not valid JSON: %w", err)
		}
		raws = []json.RawMessage{body}
	default:
		return nil, nil, errors.New("body must be a JSON object or an array of objects")
	}
	evs = make([]decodedEvent, 0, len(raws))
	for i, raw := range raws {
		ev, rej := decodeEvent(raw, now, lim)
		if rej != nil {
			rej.Index = i
			rejected = append(rejected, *rej)
			continue
		}
		evs = append(evs, decodedEvent{index: i, event: ev})
	}
	return evs, rejected, nil
}

// wireEvent is an event as sent, each field kept raw so that a problem can
// be named precisely.
type wireEvent struct {
	EventID    json.RawMessage `json:"event_id"`
	EventName  json.RawMessage `json:"event_name"`
	Timestamp  json.RawMessage `json:"timestamp"`
	UserID     json.RawMessage `json:"user_id"`
	Properties json.RawMessage `json:"properties"`
}

func isNull(raw json.RawMessage) bool {
	return len(raw) == 0 || string(raw) == "null"
}

// decodeEvent decodes and validates one syntactically valid JSON value.
func decodeEvent(raw json.RawMessage, now time.Time, lim EventLimits) (Event, *Rejection) {
	reject := func(id string, drop DropReason, format string, args ...any) (Event, *Rejection) {
		return Event{}, &Rejection{EventID: id, Reason: fmt.Sprintf(format, args...), Drop: drop}
	}
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return reject("", DropInvalid, "event must be a JSON object")
	}
	var w wireEvent
	if err := json.Unmarshal(raw, &w); err != nil {
		return reject("", DropInvalid, "event is not valid: %v", err)
	}
	var ev Event
	var rej *Rejection
	str := func(field string, r json.RawMessage, required bool) string {
		if rej != nil {
			return ""
		}
		if isNull(r) {
			if required {
				_, rej = reject(ev.ID, DropMissing, "%s: missing", field)
			}
			return ""
		}
		if r[0] != '"' {
			_, rej = reject(ev.ID, DropInvalid, "%s: must be a string", field)
			return ""
		}
		var s string
		if err := json.Unmarshal(r, &s); err != nil {
			_, rej = reject(ev.ID, DropInvalid, "%s: %v", field, err)
			return ""
		}
		switch {
		case len(s) > lim.MaxStringLen:
			_, rej = reject(ev.ID, DropInvalid, "%s: longer than %d bytes", field, lim.MaxStringLen)
			return ""
		case s == "" && required:
			_, rej = reject(ev.ID, DropMissing, "%s: empty", field)
		}
		return s
	}
	ev.ID = str("event_id", w.EventID, false)
	if rej != nil {
		rej.EventID = ""
		return Event{}, rej
	}
	ev.Name = str("event_name", w.EventName, true)
	ev.UserID = str("user_id", w.UserID, true)
	if rej != nil {
		return Event{}, rej
	}

	// Timestamp: RFC 3339 (or another format TimeAuto knows) or unix time
	// (milliseconds from Date.now(), or seconds); absent means now.
	switch {
	case isNull(w.Timestamp):
		ev.Time = now
	case w.Timestamp[0] == '"':
		var s string
		if err := json.Unmarshal(w.Timestamp, &s); err != nil {
			return reject(ev.ID, DropInvalid, "timestamp: %v", err)
		}
		t, err := timeParser{loc: time.UTC}.parseString(s)
		if err != nil {
			return reject(ev.ID, DropInvalid, "timestamp: %v", err)
		}
		ev.Time = t
	case w.Timestamp[0] == '-' || (w.Timestamp[0] >= '0' && w.Timestamp[0] <= '9'):
		v, err := strconv.ParseFloat(string(w.Timestamp), 64)
		if err != nil || math.IsInf(v, 0) {
			return reject(ev.ID, DropNonFinite, "timestamp: number out of range")
		}
		t, err := timeParser{loc: time.UTC}.parseNumber(v)
		if err != nil {
			return reject(ev.ID, DropInvalid, "timestamp: %v", err)
		}
		ev.Time = t
	default:
		return reject(ev.ID, DropInvalid, "timestamp: must be an RFC 3339 string or unix milliseconds")
	}
	if why := futureReason(ev.Time, now, lim.MaxFuture); why != "" {
		return reject(ev.ID, DropFuture, "timestamp: %s", why)
	}

	if !isNull(w.Properties) {
		if w.Properties[0] != '{' {
			return reject(ev.ID, DropInvalid, "properties: must be an object")
		}
		if len(w.Properties) > lim.MaxPropertiesBytes {
			return reject(ev.ID, DropInvalid, "properties: longer than %d bytes", lim.MaxPropertiesBytes)
		}
		dec := json.NewDecoder(bytes.NewReader(w.Properties))
		dec.UseNumber()
		var props map[string]any
		if err := dec.Decode(&props); err != nil {
			return reject(ev.ID, DropInvalid, "properties: %v", err)
		}
		if len(props) > lim.MaxProperties {
			return reject(ev.ID, DropInvalid, "properties: more than %d keys", lim.MaxProperties)
		}
		for k, v := range props {
			nv, err := finiteNumbers(v)
			if err != nil {
				return reject(ev.ID, DropNonFinite, "properties.%s: %v", k, err)
			}
			props[k] = nv
		}
		if len(props) > 0 {
			ev.Properties = props
		}
	}
	if ev.ID == "" {
		ev.ID = "srv-" + rand.Text()
	}
	return ev, nil
}

// finiteNumbers replaces the json.Numbers in v by float64s, failing on a
// number that doesn't fit one (1e400).
func finiteNumbers(v any) (any, error) {
	switch x := v.(type) {
	case json.Number:
		f, err := strconv.ParseFloat(string(x), 64)
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			return nil, fmt.Errorf("number %.40s is not finite in float64", x)
		}
		return f, nil
	case map[string]any:
		for k, e := range x {
			ne, err := finiteNumbers(e)
			if err != nil {
				return nil, err
			}
			x[k] = ne
		}
	case []any:
		for i, e := range x {
			ne, err := finiteNumbers(e)
			if err != nil {
				return nil, err
			}
			x[i] = ne
		}
	}
	return v, nil
}
