package watch

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/termsafe"
)

// Event is the JSON line printed for every message in JSON mode.
type Event struct {
	// Received is when the watcher got the message.
	Received time.Time `json:"received"`
	// Device is the device id, from the topic.
	Device string `json:"device"`
	// Kind is "status", "health" or "alert".
	Kind string `json:"kind"`
	// Topic is the message's topic.
	Topic string `json:"topic"`
	// Retained is set for a retained message (a status the broker kept).
	Retained bool `json:"retained,omitempty"`
	// Payload is the message as published, or a JSON string when it was
	// not JSON.
	Payload json.RawMessage `json:"payload"`
}

// maxAlerts is how many recent alerts the view keeps per device.
const maxAlerts = 5

// view is what the watcher knows of every device.
type view struct {
	prefix  string
	devices map[string]*device
}

type device struct {
	id       string
	status   *statusView
	health   map[string]any
	healthAt time.Time
	alerts   []alertView // newest first
	nAlerts  int
	lastSeen time.Time             // when the device last published
	rate     alertRate             // its alerts over the last minute
	open     map[episodeKey]string // open episodes → their severity
}

type statusView struct {
	State    string    `json:"state"`
	Since    time.Time `json:"since"`
	Version  string    `json:"version"`
	BirthSeq uint64    `json:"birth_seq"`
	Models   []string  `json:"models"`
	Reason   string    `json:"reason"`
}

type alertView struct {
	Seq       uint64    `json:"seq"`
	TS        time.Time `json:"ts"`
	Stream    string    `json:"stream"`
	Key       string    `json:"key"`
	Severity  string    `json:"severity"`
	State     string    `json:"state"`
	Score     float64   `json:"score"`
	Threshold float64   `json:"threshold"`
	Replayed  bool      `json:"replayed"`
}

func newView(prefix string) *view {
	return &view{prefix: prefix, devices: map[string]*device{}}
}

func (v *view) device(id string) *device {
	d, ok := v.devices[id]
	if !ok {
		d = &device{id: id}
		v.devices[id] = d
	}
	return d
}

// apply takes one message into the view and returns its event; ok is false
// for a topic the view does not know.
func (v *view) apply(topic string, payload []byte, retained bool, now time.Time) (ev Event, ok bool) {
	rest, found := strings.CutPrefix(topic, v.prefix+"/")
	if !found {
		return ev, false
	}
	levels := strings.Split(rest, "/")
	if len(levels) < 2 || levels[0] == "" {
		return ev, false
	}
	id := levels[0]
	defer func() {
		if d := v.devices[id]; d != nil && ok {
			d.lastSeen = now
		}
	}()
	ev = Event{Received: now.UTC(), Device: id, Topic: topic, Retained: retained, Payload: rawOrString(payload)}
	switch {
	case len(levels) == 2 && levels[1] == "status":
		ev.Kind = "status"
		if len(payload) == 0 { // a cleared retained status: the device is gone
			delete(v.devices, id)
			return ev, true
		}
		var st statusView
		if json.Unmarshal(payload, &st) == nil {
			v.device(id).status = &st
		}
	case len(levels) == 2 && levels[1] == "health":
		ev.Kind = "health"
		var h map[string]any
		if json.Unmarshal(payload, &h) == nil {
			d := v.device(id)
			d.health, d.healthAt = h, now
		}
	case len(levels) >= 3 && levels[1] == "alerts":
		ev.Kind = "alert"
		var a alertView
		if json.Unmarshal(payload, &a) == nil {
			d := v.device(id)
			d.nAlerts++
			d.rate.add(now)
			d.takeEpisode(a)
			d.alerts = slices.Insert(d.alerts, 0, a)
			if len(d.alerts) > maxAlerts {
				d.alerts = d.alerts[:maxAlerts]
			}
		}
	default:
		return ev, false
	}
	return ev, true
}

func rawOrString(b []byte) json.RawMessage {
	if json.Valid(b) {
		return json.RawMessage(bytes.Clone(b))
	}
	s, _ := json.Marshal(string(b))
	return s
}

// render draws the detailed view as text. Times are shown in UTC.
func (v *view) render(broker string, connected bool, dropped int, now time.Time) string {
	return v.renderDetail(broker, connected, dropped, now, Filter{}, 0)
}

// renderDetail draws the devices the filter keeps, several lines each.
func (v *view) renderDetail(broker string, connected bool, dropped int, now time.Time, f Filter, staleAfter time.Duration) string {
	var b strings.Builder
	conn := "connected"
	if !connected {
		conn = "DISCONNECTED, reconnecting"
	}
	fmt.Fprintf(&b, "vigil watch  %s  prefix %q  %s  %d device(s)  %s UTC\n", esc(broker), v.prefix, conn, len(v.devices), now.UTC().Format("15:04:05"))
	if dropped > 0 {
		fmt.Fprintf(&b, "(%d messages dropped: the view could not keep up)\n", dropped)
	}
	if len(v.devices) == 0 {
		b.WriteString("\nno device has published yet\n")
		return b.String()
	}
	for _, id := range slices.Sorted(maps.Keys(v.devices)) {
		d := v.devices[id]
		if !f.keep(id, d.state(now, staleAfter)) {
			continue
		}
		b.WriteByte('\n')
		b.WriteString(esc(id))
		if st := d.status; st != nil {
			state := strings.ToUpper(esc(st.State))
			if st.Reason != "" {
				state += " (" + esc(st.Reason) + ")"
			}
			fmt.Fprintf(&b, "  %s", esc(state))
			if !st.Since.IsZero() {
				fmt.Fprintf(&b, " since %s (%s)", st.Since.UTC().Format("15:04:05"), age(now.Sub(st.Since)))
			}
			if st.Version != "" {
				fmt.Fprintf(&b, "  version %s", esc(st.Version))
			}
			fmt.Fprintf(&b, "  birth %d", st.BirthSeq)
		} else {
			b.WriteString("  (no status)")
		}
		if d.health != nil {
			if up, ok := d.health["uptime_s"].(float64); ok {
				fmt.Fprintf(&b, "  up %s", age(time.Duration(up)*time.Second))
			}
			fmt.Fprintf(&b, "  health %s ago", age(now.Sub(d.healthAt)))
		}
		b.WriteByte('\n')
		models := anyList(d.health["models"])
		if models == "" && d.status != nil {
			models = strings.Join(d.status.Models, " ")
		}
		line(&b, "models", models)
		for _, k := range []string{"rates", "backlog", "drops", "learning"} {
			line(&b, k, flatten(d.health[k]))
		}
		line(&b, "mqtt", mqttLine(d.health["mqtt"]))
		if d.nAlerts > 0 {
			fmt.Fprintf(&b, "  %-9s %d received, latest:\n", "alerts", d.nAlerts)
			for _, a := range d.alerts {
				stream := a.Stream
				if a.Key != "" {
					stream += "/" + a.Key
				}
				fmt.Fprintf(&b, "    %s  %-14s %-8s %8s/%-8s %-9s seq %d", a.TS.UTC().Format("15:04:05"), esc(stream), esc(a.Severity),
					num(a.Score), num(a.Threshold), esc(a.State), a.Seq)
				if a.Replayed {
					b.WriteString("  replayed")
				}
				b.WriteByte('\n')
			}
		}
	}
	return b.String()
}

// line writes one "name value" line; value is escaped (it comes from the
// devices' messages).
func line(b *strings.Builder, name, value string) {
	if value != "" {
		fmt.Fprintf(b, "  %-9s %s\n", name, esc(value))
	}
}

// esc escapes what a device (or anyone who can publish under the prefix)
// sent before it reaches the terminal: a newline would forge a line, an
// escape sequence would take over the terminal.
var esc = termsafe.String

// age formats a duration for humans: 5s, 3m10s, 2h5m, 3d4h.
func age(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds", int(d.Minutes()), int(d.Seconds())%60)
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%dd%dh", int(d.Hours())/24, int(d.Hours())%24)
}

// flatten writes any JSON value as sorted key=value pairs, nested keys
// joined with '.'.
func flatten(v any) string {
	var parts []string
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch x := v.(type) {
		case map[string]any:
			for _, k := range slices.Sorted(maps.Keys(x)) {
				key := k
				if prefix != "" {
					key = prefix + "." + k
				}
				walk(key, x[k])
			}
		case nil:
		default:
			s := scalar(x)
			if prefix == "" {
				parts = append(parts, s)
			} else {
				parts = append(parts, prefix+"="+s)
			}
		}
	}
	walk("", v)
	return strings.Join(parts, " ")
}

func scalar(v any) string {
	switch x := v.(type) {
	case float64:
		return num(x)
	case string:
		return x
	case bool:
		return strconv.FormatBool(x)
	case []any:
		s := make([]string, len(x))
		for i, e := range x {
			s[i] = scalar(e)
		}
		return strings.Join(s, ",")
	}
	b, _ := json.Marshal(v)
	return string(b)
}

func anyList(v any) string {
	switch x := v.(type) {
	case []any:
		s := make([]string, len(x))
		for i, e := range x {
			s[i] = scalar(e)
		}
		return strings.Join(s, " ")
	case map[string]any:
		return flatten(x)
	}
	return ""
}

// num formats a number compactly: integers as such, others with up to
// four significant digits.
func num(f float64) string {
	if f == float64(int64(f)) && f < 1e15 && f > -1e15 {
		return strconv.FormatInt(int64(f), 10)
	}
	return strconv.FormatFloat(f, 'g', 4, 64)
}

// mqttLine summarizes the publisher's stats from the health message.
func mqttLine(v any) string {
	m, ok := v.(map[string]any)
	if !ok {
		return ""
	}
	var parts []string
	if c, ok := m["connected"].(bool); ok {
		parts = append(parts, map[bool]string{true: "connected", false: "disconnected"}[c])
	}
	if r, ok := m["reconnects"].(float64); ok {
		parts = append(parts, "reconnects="+num(r))
	}
	var inFlight, backlog float64
	var published []string
	if lanes, ok := m["lanes"].(map[string]any); ok {
		for _, name := range slices.Sorted(maps.Keys(lanes)) {
			l, _ := lanes[name].(map[string]any)
			f, _ := l["in_flight"].(float64)
			r, _ := l["replay_backlog"].(float64)
			p, _ := l["published"].(float64)
			inFlight += f
			backlog += r
			published = append(published, name+"="+num(p))
		}
		parts = append(parts, "in_flight="+num(inFlight), "replay_backlog="+num(backlog), "published "+strings.Join(published, " "))
	}
	if e, ok := m["last_error"].(string); ok && e != "" {
		parts = append(parts, "last_error="+strconv.Quote(e))
	}
	return strings.Join(parts, " ")
}
