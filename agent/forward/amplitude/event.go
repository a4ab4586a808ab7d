package amplitude

import (
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/vigil-edge/vigil/agent/forward/internal/fwd"
	"github.com/vigil-edge/vigil/agent/record"
)

// Event types Vigil sends.
const (
	// EventAnomaly is sent for each alert at or above Options.MinSeverity.
	EventAnomaly = "vigil_anomaly_detected"
	// EventAdvice is sent for each advice record the Dify forwarder stored.
	EventAdvice = "vigil_ai_advice"
)

// MaxPropertyLen is the longest string value Amplitude accepts in
// event_properties; longer strings are truncated (at a character boundary,
// counting bytes, so the result fits however Amplitude counts).
const MaxPropertyLen = 1024

// placeholderIDs are ids Amplitude rejects as placeholders: the contract's
// list and a few more that Amplitude's docs name.
var placeholderIDs = map[string]bool{
	"null": true, "none": true, "undefined": true, "0": true, "-1": true,
	"unknown": true, "n/a": true, "nil": true, "(null)": true, "na": true,
	"empty": true, "default": true,
	"00000000-0000-0000-0000-000000000000": true,
}

// ValidID reports whether Amplitude keeps id as a user_id or device_id: at
// least minLen characters and not a placeholder such as "null", "0" or the
// all-zero UUID.
func ValidID(id string, minLen int) bool {
	if utf8.RuneCountInString(id) < minLen {
		return false
	}
	return !placeholderIDs[strings.ToLower(strings.TrimSpace(id))]
}

// wireEvent is one event as Amplitude receives it.
type wireEvent struct {
	EventType       string         `json:"event_type"`
	DeviceID        string         `json:"device_id"`
	UserID          string         `json:"user_id,omitempty"`
	InsertID        string         `json:"insert_id"`
	Time            int64          `json:"time"`
	Platform        string         `json:"platform,omitempty"`
	AppVersion      string         `json:"app_version,omitempty"`
	EventProperties map[string]any `json:"event_properties"`
}

// alertEvent builds the vigil_anomaly_detected event of an alert.
func (f *Forwarder) alertEvent(a *record.Alert) wireEvent {
	model, version, _ := strings.Cut(a.Model, "@")
	names := make([]string, len(a.TopFeatures))
	shares := make([]any, len(a.TopFeatures))
	for i, ft := range a.TopFeatures {
		names[i], shares[i] = ft.Name, number(ft.Share)
	}
	props := map[string]any{
		"alert_id":           a.ID,
		"stream":             a.Stream,
		"kind":               a.Kind,
		"score":              number(a.Score),
		"threshold":          number(a.Threshold),
		"severity":           a.Severity,
		"episode":            a.Episode,
		"update":             a.Update,
		"state":              a.State,
		"model":              model,
		"model_version":      version,
		"top_features":       names,
		"top_feature_shares": shares,
		"replayed":           a.Replayed,
		"window_start":       timeString(a.Window.Start),
		"window_end":         timeString(a.Window.End),
	}
	if a.Confidence != nil {
		props["confidence"] = number(*a.Confidence)
	}
	ev := wireEvent{
		EventType: EventAnomaly,
		DeviceID:  f.opts.DeviceID,
		InsertID:  a.ID,
		Time:      a.TS.UnixMilli(),
	}
	// A behaviour stream is keyed by user: its key is the user id, when
	// Amplitude would accept it as one. Otherwise the key is a property.
	if a.Kind == "behaviour" && a.Key != "" && ValidID(a.Key, f.opts.MinIDLength) {
		ev.UserID = a.Key
	} else if a.Key != "" {
		props["key"] = a.Key
	}
	ev.EventProperties = props
	return ev
}

// adviceEvent builds the vigil_ai_advice event of an advice record. The
// Dify forwarder sets Advice.Key only for behaviour streams, so a valid key
// is a user id here as for the alert.
func (f *Forwarder) adviceEvent(a *record.Advice) wireEvent {
	props := map[string]any{
		"alert_id":        a.AlertID,
		"workflow_run_id": a.WorkflowRunID,
		"status":          a.Status,
		"stream":          a.Stream,
		"severity":        a.Severity,
		"replayed":        a.Replayed,
	}
	if a.Outputs != nil {
		props["outputs"] = a.Outputs
	}
	if a.Error != "" {
		props["error"] = a.Error
	}
	if a.ElapsedTime != 0 {
		props["elapsed_time"] = number(a.ElapsedTime)
	}
	ev := wireEvent{
		EventType: EventAdvice,
		DeviceID:  f.opts.DeviceID,
		InsertID:  a.ID,
		Time:      a.TS.UnixMilli(),
	}
	if a.Key != "" && ValidID(a.Key, f.opts.MinIDLength) {
		ev.UserID = a.Key
	}
	ev.EventProperties = props
	return ev
}

// encode finishes ev (platform, app version, string limits) and encodes it.
func (f *Forwarder) encode(ev wireEvent) ([]byte, error) {
	ev.Platform = "Vigil"
	ev.AppVersion = f.opts.AppVersion
	ev.EventProperties = clip(ev.EventProperties).(map[string]any)
	b, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("encode event %s: %w", ev.InsertID, err)
	}
	return b, nil
}

// clip returns v with every string at most MaxPropertyLen bytes and every
// non-finite number (which JSON cannot carry) as a string, recursively. It
// copies maps and slices, never changing the record it was built from.
func clip(v any) any {
	switch x := v.(type) {
	case string:
		return fwd.Truncate(x, MaxPropertyLen)
	case float64:
		return number(x)
	case float32:
		return number(float64(x))
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = clip(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = clip(e)
		}
		return out
	case []string:
		out := make([]string, len(x))
		for i, e := range x {
			out[i] = fwd.Truncate(e, MaxPropertyLen)
		}
		return out
	}
	return v
}

// number is f, or its name as a string when JSON cannot hold it (NaN, ±Inf).
func number(f float64) any {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return fmt.Sprint(f)
	}
	return f
}

func timeString(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}
