// Package record defines what Vigil stores in its buffer and publishes: the
// score of a window, an alert, and the advice an LLM workflow wrote for an
// alert. Records are JSON in the buffer and on the wire; their ids are
// derived from what they describe, so replaying the same input after a crash
// produces the same ids and every consumer can deduplicate.
package record

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Lanes of the buffer, one per record kind.
const (
	LaneScore  = "score"
	LaneAlert  = "alert"
	LaneAdvice = "advice"
	// LaneShadow holds what a model in its shadow run scored (Shadow).
	LaneShadow = "shadow"
)

// Score is the anomaly score of one window of one stream (and, for a
// behaviour stream, one key such as a user id).
type Score struct {
	ID        string    `json:"id"`
	Seq       uint64    `json:"seq,omitempty"` // the buffer's sequence number, set when read back
	TS        time.Time `json:"ts"`            // the window's end
	Stream    string    `json:"stream"`
	Key       string    `json:"key,omitempty"`
	Score     float64   `json:"score"`
	Threshold float64   `json:"threshold"`
	Model     string    `json:"model"` // name@version
	Replayed  bool      `json:"replayed"`
	// Stuck names the channel that had read one value for longer than
	// its model allows when the window ended (a frozen sensor): the window
	// counts as exceeding the threshold whatever its score.
	Stuck string `json:"stuck,omitempty"`
	// Shifted names the channel whose level shift over the window's last
	// samples went furthest over its limit (models/shift): the window
	// counts as exceeding the threshold whatever its score.
	Shifted string `json:"shifted,omitempty"`
}

// Shadow is what a deployed model in its shadow run scored on one window,
// beside the serving model's score of the same window. Shadow records are
// published on <prefix>/<device>/shadow/<stream>; they raise no alert.
type Shadow struct {
	ID        string    `json:"id"`
	Seq       uint64    `json:"seq,omitempty"`
	TS        time.Time `json:"ts"` // the window's end
	Stream    string    `json:"stream"`
	Key       string    `json:"key,omitempty"`
	Window    Window    `json:"window"`
	Model     string    `json:"model"` // the shadow model, name@version
	Score     float64   `json:"score"`
	Threshold float64   `json:"threshold"`
	Over      bool      `json:"over"` // Score > Threshold
	// The serving model and its score of the same window.
	Serving          string  `json:"serving"`
	ServingScore     float64 `json:"serving_score"`
	ServingThreshold float64 `json:"serving_threshold"`
	ServingOver      bool    `json:"serving_over"`
	Replayed         bool    `json:"replayed"`
}

// ShadowID is the id of a shadow record: "h-" and a hash of the window and
// the shadow model, stable like every record id.
func ShadowID(device, stream, key string, windowEnd time.Time, model string, seq int) string {
	return "h-" + IDSeq(LaneShadow, device, stream, key, windowEnd, model, seq)[2:]
}

// Window is the time span an alert's window covered.
type Window struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// Feature is one channel or feature and its share of the anomaly score.
type Feature struct {
	Name  string  `json:"name"`
	Share float64 `json:"share"` // fraction of the window's error, 0..1
}

// Severity bands, from least to most severe.
const (
	SeverityWarning  = "warning"
	SeverityMajor    = "major"
	SeverityCritical = "critical"
)

// SeverityRank orders severities: warning 1, major 2, critical 3; anything
// else 0.
func SeverityRank(s string) int {
	switch s {
	case SeverityWarning:
		return 1
	case SeverityMajor:
		return 2
	case SeverityCritical:
		return 3
	}
	return 0
}

// Alert reports an anomaly episode of a stream. The first alert of an
// episode opens it; later alerts of the same episode are updates (a higher
// severity, or the episode's end) and carry the same Episode id.
type Alert struct {
	ID        string    `json:"id"`
	Seq       uint64    `json:"seq,omitempty"`
	TS        time.Time `json:"ts"`
	Device    string    `json:"device"`
	Stream    string    `json:"stream"`
	Key       string    `json:"key,omitempty"` // e.g. the user id of a behaviour stream
	Kind      string    `json:"kind"`          // sensor | behaviour
	Score     float64   `json:"score"`
	Threshold float64   `json:"threshold"`
	// Confidence is 1 − P(a normal window of the stream scores at least
	// Score), from the normal-score distribution fitted when the model was
	// calibrated (models.Threshold.Confidence); absent when the model
	// records none.
	Confidence  *float64  `json:"confidence,omitempty"`
	Severity    string    `json:"severity"`
	Episode     string    `json:"episode"`
	Update      int       `json:"update"` // 0 for the alert that opened the episode
	State       string    `json:"state"`  // open | escalated | closed
	Window      Window    `json:"window"`
	TopFeatures []Feature `json:"top_features"`
	Model       string    `json:"model"`
	Replayed    bool      `json:"replayed"`
	// Reason says why an alert that no window caused was raised (a
	// behaviour key's episode closed because the key was evicted).
	Reason string `json:"reason,omitempty"`
}

// ConfidentEnough reports whether the alert passes a min_confidence filter:
// always when min ≤ 0, else only with a confidence of at least min.
func (a *Alert) ConfidentEnough(min float64) bool {
	return min <= 0 || (a.Confidence != nil && *a.Confidence >= min)
}

// Advice is what the Dify workflow produced for an alert.
type Advice struct {
	ID            string         `json:"id"`
	Seq           uint64         `json:"seq,omitempty"`
	TS            time.Time      `json:"ts"`
	AlertID       string         `json:"alert_id"`
	Device        string         `json:"device"`
	Stream        string         `json:"stream"`
	Key           string         `json:"key,omitempty"`
	Severity      string         `json:"severity"`
	WorkflowRunID string         `json:"workflow_run_id"`
	Status        string         `json:"status"` // succeeded | failed | stopped
	Outputs       map[string]any `json:"outputs,omitempty"`
	Error         string         `json:"error,omitempty"`
	ElapsedTime   float64        `json:"elapsed_time,omitempty"`
	Replayed      bool           `json:"replayed"`
}

// ID derives a stable record id from what the record describes: its kind,
// the device, the stream, the key, the window's end and the model version.
// The same window scored by the same model always gets the same id.
func ID(kind, device, stream, key string, windowEnd time.Time, model string) string {
	h := sha256.New()
	for _, part := range []string{kind, device, stream, key, strconv.FormatInt(windowEnd.UnixNano(), 10), model} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	return kind[:1] + "-" + hex.EncodeToString(h.Sum(nil)[:12])
}

// IDSeq is ID for the seq-th window (from 0) of several that end at the
// same time, as when a sensor stamps samples more coarsely than it sends
// them. IDSeq with seq 0 is ID, so the ids of windows that end alone do
// not change.
func IDSeq(kind, device, stream, key string, windowEnd time.Time, model string, seq int) string {
	if seq == 0 {
		return ID(kind, device, stream, key, windowEnd, model)
	}
	h := sha256.New()
	for _, part := range []string{kind, device, stream, key, strconv.FormatInt(windowEnd.UnixNano(), 10), model, strconv.Itoa(seq)} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	return kind[:1] + "-" + hex.EncodeToString(h.Sum(nil)[:12])
}

// Decode unmarshals a record of the given lane from the buffer.
func Decode(lane string, data []byte) (any, error) {
	var v any
	switch lane {
	case LaneScore:
		v = new(Score)
	case LaneAlert:
		v = new(Alert)
	case LaneAdvice:
		v = new(Advice)
	case LaneShadow:
		v = new(Shadow)
	default:
		return nil, fmt.Errorf("decode record: unknown lane %q", lane)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return nil, fmt.Errorf("decode %s record: %w", lane, err)
	}
	return v, nil
}
