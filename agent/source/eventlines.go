package source

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// maxEventLine bounds one line of an events file.
const maxEventLine = 1 << 20

// ReadEventLines reads behaviour events from a JSON-lines file, one event
// object a line, and calls fn with each in file order. Each line is decoded
// as the event sources decode a body (the same fields, timestamp rules and
// DefaultEventLimits), so that a trainer reads events as the agent will
// serve them. A line may also carry "anomaly": a non-zero number marks the
// event anomalous (a label for training and evaluation). A file has no
// arrival time, so an event without a timestamp is an error, as is any bad
// line; blank lines are skipped. Errors name the line.
func ReadEventLines(r io.Reader, fn func(ev Event, anomalous bool) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxEventLine)
	lim := DefaultEventLimits()
	lim.MaxFuture = 0 // a recorded file: its times are not the device clock's
	for line := 1; sc.Scan(); line++ {
		raw := bytes.TrimSpace(sc.Bytes())
		if len(raw) == 0 {
			continue
		}
		ev, anomalous, err := decodeEventLine(raw, lim)
		if err != nil {
			return fmt.Errorf("line %d: %w", line, err)
		}
		if err := fn(ev, anomalous); err != nil {
			return fmt.Errorf("line %d: %w", line, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read events: %w", err)
	}
	return nil
}

// decodeEventLine decodes one line of an events file.
func decodeEventLine(raw []byte, lim EventLimits) (Event, bool, error) {
	if !json.Valid(raw) {
		var v any
		return Event{}, false, fmt.Errorf("not valid JSON: %w", json.Unmarshal(raw, &v))
	}
	var label struct {
		Timestamp json.RawMessage `json:"timestamp"`
		Anomaly   *float64        `json:"anomaly"`
	}
	if raw[0] == '{' {
		if err := json.Unmarshal(raw, &label); err != nil {
			return Event{}, false, fmt.Errorf("anomaly: %w", err)
		}
		if isNull(label.Timestamp) {
			return Event{}, false, errors.New("timestamp: missing")
		}
	}
	ev, rej := decodeEvent(raw, time.Time{}, lim)
	if rej != nil {
		return Event{}, false, errors.New(rej.Reason)
	}
	return ev, label.Anomaly != nil && *label.Anomaly != 0, nil
}
