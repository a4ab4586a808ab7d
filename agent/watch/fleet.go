package watch

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// The compact (fleet) view: one line per device, worst first, cut to the
// terminal's size. It is what `vigil watch` shows above a handful of
// devices; the detailed view, several lines per device, stays below that.

// Mode chooses the live view's layout.
type Mode string

const (
	// ModeAuto is the compact view above AutoCompactAbove devices, the
	// detailed one below.
	ModeAuto Mode = "auto"
	// ModeCompact is one line per device.
	ModeCompact Mode = "compact"
	// ModeDetail is several lines per device, with the latest alerts.
	ModeDetail Mode = "detail"
)

// AutoCompactAbove is the number of devices above which ModeAuto shows the
// compact view: the detailed view takes about eight lines a device, so a
// 24-line terminal holds about this many.
const AutoCompactAbove = 3

// Device states of the compact view.
const (
	stateOnline  = "online"
	stateOffline = "offline"
	stateStale   = "stale"
)

// Filter selects the devices the live view shows.
type Filter struct {
	// Devices is a shell pattern (path.Match) over device ids; empty
	// means every device.
	Devices string
	// States keeps only devices in these states (online, offline, stale);
	// empty means every state.
	States []string
}

func (f Filter) validate() error {
	var errs []error
	if f.Devices != "" {
		if _, err := path.Match(f.Devices, ""); err != nil {
			errs = append(errs, fmt.Errorf("Options.Filter.Devices: %q: %w", f.Devices, err))
		}
	}
	for _, s := range f.States {
		switch s {
		case stateOnline, stateOffline, stateStale:
		default:
			errs = append(errs, fmt.Errorf("Options.Filter.States: %q is not online, offline or stale", s))
		}
	}
	return errors.Join(errs...)
}

func (f Filter) keep(id, state string) bool {
	if f.Devices != "" {
		if ok, _ := path.Match(f.Devices, id); !ok {
			return false
		}
	}
	return len(f.States) == 0 || slices.Contains(f.States, state)
}

// episodeKey names one episode lane of a device: its stream and, for
// behaviour streams, its key.
type episodeKey struct{ stream, key string }

// rateWindow is how far back the compact view's alert rate looks.
const rateWindow = time.Minute

// alertRate counts a device's alerts in one-second buckets over the last
// rateWindow, in constant memory.
type alertRate struct {
	buckets [60]uint32
	last    int64 // the second of the newest bucket
}

func (r *alertRate) add(now time.Time) {
	s := now.Unix()
	r.advance(s)
	r.buckets[s%int64(len(r.buckets))]++
}

// advance clears the buckets between the newest one and second s.
func (r *alertRate) advance(s int64) {
	if s <= r.last {
		return
	}
	n := int64(len(r.buckets))
	for i := r.last + 1; i <= s && i <= r.last+n; i++ {
		r.buckets[i%n] = 0
	}
	r.last = s
}

// perMinute is the number of alerts in the last rateWindow.
func (r *alertRate) perMinute(now time.Time) float64 {
	r.advance(now.Unix())
	var sum uint32
	for _, b := range r.buckets {
		sum += b
	}
	return float64(sum) * float64(time.Minute) / float64(rateWindow)
}

// severityRank orders severities, worst highest.
func severityRank(s string) int {
	switch s {
	case "critical":
		return 4
	case "major":
		return 3
	case "warning":
		return 2
	case "":
		return 0
	}
	return 1
}

// takeEpisode follows a device's open episodes from its alerts.
func (d *device) takeEpisode(a alertView) {
	k := episodeKey{a.Stream, a.Key}
	if a.State == "closed" {
		delete(d.open, k)
		return
	}
	if d.open == nil {
		d.open = map[episodeKey]string{}
	}
	d.open[k] = a.Severity
}

// worst is the device's worst open episode: its stream (and key) and
// severity, or "" when none is open.
func (d *device) worst() (episode, severity string) {
	best := -1
	for _, k := range slices.SortedFunc(maps.Keys(d.open), func(a, b episodeKey) int {
		return cmp.Or(cmp.Compare(a.stream, b.stream), cmp.Compare(a.key, b.key))
	}) {
		s := d.open[k]
		if r := severityRank(s); r > best {
			best, severity, episode = r, s, k.stream
			if k.key != "" {
				episode += "/" + k.key
			}
		}
	}
	return episode, severity
}

// state is online, offline or stale: online devices that have sent nothing
// for staleAfter are stale.
func (d *device) state(now time.Time, staleAfter time.Duration) string {
	if d.status != nil && d.status.State != "" && d.status.State != stateOnline {
		return stateOffline
	}
	if staleAfter > 0 && now.Sub(d.lastSeen) > staleAfter {
		return stateStale
	}
	return stateOnline
}

// streams is the number of streams the device's health names.
func (d *device) streams() int {
	if m, ok := d.health["models"].(map[string]any); ok {
		return len(m)
	}
	if d.status != nil {
		return len(d.status.Models)
	}
	return 0
}

// backlog is the records waiting in the device's buffer, over every lane.
func (d *device) backlog() (n float64, ok bool) {
	lanes, ok := d.health["backlog"].(map[string]any)
	if !ok {
		return 0, false
	}
	for _, l := range lanes {
		if m, isMap := l.(map[string]any); isMap {
			r, _ := m["records"].(float64)
			n += r
		}
	}
	return n, true
}

// row is one device of the compact view.
type row struct {
	id, state, episode, severity string
	streams                      int
	rate                         float64
	backlog                      string
	seen                         time.Time
}

// stateRank orders rows worst first: offline, stale, then online devices by
// the severity of their worst open episode.
func (r row) rank() int {
	switch r.state {
	case stateOffline:
		return 10
	case stateStale:
		return 9
	}
	return severityRank(r.severity)
}

// rows returns the devices the filter keeps, worst first.
func (v *view) rows(f Filter, now time.Time, staleAfter time.Duration) []row {
	out := make([]row, 0, len(v.devices))
	for id, d := range v.devices {
		st := d.state(now, staleAfter)
		if !f.keep(id, st) {
			continue
		}
		r := row{id: id, state: st, streams: d.streams(), rate: d.rate.perMinute(now), backlog: "-", seen: d.lastSeen}
		r.episode, r.severity = d.worst()
		if n, ok := d.backlog(); ok {
			r.backlog = num(n)
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b row) int {
		return cmp.Or(
			-cmp.Compare(a.rank(), b.rank()),
			-cmp.Compare(a.rate, b.rate),
			strings.Compare(a.id, b.id))
	})
	return out
}

// renderCompact draws one line per device, worst first, cut to cols×lines:
// the last line counts the devices that did not fit.
func (v *view) renderCompact(broker string, connected bool, dropped int, now time.Time, f Filter, staleAfter time.Duration, cols, lines int) string {
	rows := v.rows(f, now, staleAfter)
	var counts [3]int
	for _, r := range rows {
		switch r.state {
		case stateOnline:
			counts[0]++
		case stateStale:
			counts[1]++
		default:
			counts[2]++
		}
	}
	conn := "connected"
	if !connected {
		conn = "DISCONNECTED, reconnecting"
	}
	var head []string
	head = append(head, fmt.Sprintf("vigil watch  %s  prefix %q  %s  %s UTC", broker, v.prefix, conn, now.UTC().Format("15:04:05")))
	sum := fmt.Sprintf("%d device(s): %d online, %d stale, %d offline", len(rows), counts[0], counts[1], counts[2])
	if shown := len(v.devices); shown != len(rows) {
		sum += fmt.Sprintf("  (%d hidden by the filter)", shown-len(rows))
	}
	if dropped > 0 {
		sum += fmt.Sprintf("  (%d messages dropped: the view could not keep up)", dropped)
	}
	head = append(head, sum)
	head = append(head, fmt.Sprintf(rowFormat, "DEVICE", "STATE", "WORST OPEN EPISODE", "STR", "ALERT/M", "BACKLOG", "SEEN"))

	var b strings.Builder
	for _, h := range head {
		b.WriteString(fit(h, cols))
		b.WriteByte('\n')
	}
	if len(v.devices) == 0 {
		b.WriteString("no device has published yet\n")
		return b.String()
	}
	room := lines - len(head)
	hidden := 0
	if len(rows) > room {
		room-- // the line that counts what is below the fold
		if room < 0 {
			room = 0
		}
		hidden = len(rows) - room
		rows = rows[:room]
	}
	for _, r := range rows {
		ep := "-"
		if r.episode != "" {
			ep = r.severity + " " + r.episode
		}
		seen := "never"
		if !r.seen.IsZero() {
			seen = age(now.Sub(r.seen))
		}
		line := fmt.Sprintf(rowFormat, clip(safe(r.id), 18), r.state, clip(safe(ep), 22), strconv.Itoa(r.streams), num(round1(r.rate)), r.backlog, seen)
		b.WriteString(fit(line, cols))
		b.WriteByte('\n')
	}
	if hidden > 0 {
		b.WriteString(fit(fmt.Sprintf("… %d more device(s) below; narrow with --devices or --state", hidden), cols))
		b.WriteByte('\n')
	}
	return b.String()
}

// rowFormat lays out a row of the compact view in 78 columns: device,
// state, worst open episode, streams, alerts in the last minute, records
// waiting in the buffer, time since the device last published.
const rowFormat = "%-18s %-7s %-22s %3s %7s %7s %8s"

func round1(f float64) float64 { return float64(int64(f*10+0.5)) / 10 }

// clip shortens s to n runes, marking the cut with '…'.
func clip(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// fit cuts a line to the terminal's width (0: no limit).
func fit(s string, cols int) string {
	if cols <= 0 {
		return s
	}
	return clip(s, cols)
}

// safe escapes control characters, escape sequences and bidi overrides in
// ids and names a device published (termsafe), so that no message can move
// the cursor or forge lines on the screen.
func safe(s string) string { return esc(s) }

// isControl reports a rune that must never reach the terminal as such.
func isControl(r rune) bool { return r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) }
