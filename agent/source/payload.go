package source

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// PayloadOptions say how to read a JSON sensor payload: an MQTT message or
// a line of a JSONL file, such as
//
//	{"ts":1718000000123,"a1":0.026,"a2":0.040,"cur":1.1,"pres":0.05,"temp":78.2,"thermo":26.1,"volt":231,"flow":32.0}
type PayloadOptions struct {
	// Fields maps channel names to the payload's fields. A field is a
	// top-level key or a dotted path into nested objects
	// ("sensors.flow.rms"); keys that contain dots cannot be addressed.
	Fields map[string]string
	// Channels orders the channels (the order of Input.Values). Channels
	// without an entry in Fields read the field of their own name. Empty
	// means the keys of Fields, sorted.
	Channels []string
	// TimeField is the field holding the sample's time (a number or a
	// string, see TimeFormat). Empty, or absent or null in a payload,
	// means the time the payload was received.
	TimeField string
	// TimeFormat is one of the Time* constants or a Go layout (default
	// TimeAuto).
	TimeFormat string
	// Location is the zone of layouts without one (default UTC).
	Location *time.Location
	// StreamField, when set, is a field whose string value names the
	// sample's stream; a payload without it is dropped (missing_field).
	StreamField string
	// IDField, when set, is a field holding the message's id (a string or
	// a number), which tells a message sent again from a new one that
	// shares its time (see Input.ID). It is optional in a payload.
	IDField string
	// Events means the payloads are behaviour events
	// ({event_id, event_name, timestamp, user_id, properties}, or an array
	// of them) rather than sensor samples; Fields, Channels, TimeField and
	// TimeFormat are then unused.
	Events bool
}

// PayloadError is why a payload could not be decoded.
type PayloadError struct {
	// Reason is the counter label: invalid (not JSON, wrong type),
	// non_finite or missing_field.
	Reason DropReason
	// Field is the field at fault, when there is one.
	Field string
	// Offset is the byte offset of the problem, when known (else -1).
	Offset int
	Msg    string
}

func (e *PayloadError) Error() string {
	var b strings.Builder
	b.WriteString(string(e.Reason))
	if e.Field != "" {
		b.WriteString(" field ")
		b.WriteString(strconv.Quote(e.Field))
	}
	if e.Offset >= 0 {
		fmt.Fprintf(&b, " at byte %d", e.Offset)
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	return b.String()
}

// pathNode is a level of the compiled field paths.
type pathNode struct {
	children map[string]*pathNode
	slots    []int // what the value at this path feeds
}

func (n *pathNode) child(seg string) *pathNode {
	if n.children == nil {
		n.children = map[string]*pathNode{}
	}
	c := n.children[seg]
	if c == nil {
		c = &pathNode{}
		n.children[seg] = c
	}
	return c
}

// maxDepth is the deepest nesting a payload may have.
const maxDepth = 64

// PayloadDecoder decodes JSON sensor payloads by a field mapping, without
// reflection and without allocating: it scans the payload once, skipping
// the fields it does not need. A decoder keeps scratch state, so it is not
// safe for concurrent use; give each goroutine its own.
type PayloadDecoder struct {
	channels   []string
	paths      []string // field path of each slot
	root       *pathNode
	timeSlot   int // -1 when none
	streamSlot int // -1 when none
	idSlot     int // -1 when none
	tp         timeParser

	// Per-decode state.
	gen     uint32
	seen    []uint32 // seen[slot] == gen when the slot was set
	vals    []float64
	t       time.Time
	stream  string
	id      []byte
	scratch []byte
	intern  map[string]string
}

// NewPayloadDecoder compiles opts. opts.Events must be false.
func NewPayloadDecoder(opts PayloadOptions) (*PayloadDecoder, error) {
	if opts.Events {
		return nil, optErr("Events", "a PayloadDecoder reads sensor payloads; events are decoded by the sources")
	}
	var errs []error
	channels := slices.Clone(opts.Channels)
	if len(channels) == 0 {
		for c := range opts.Fields {
			channels = append(channels, c)
		}
		slices.Sort(channels)
	}
	if len(channels) == 0 {
		errs = append(errs, optErr("Fields", "no channels: map at least one channel to a field"))
	}
	for c := range opts.Fields {
		if len(opts.Channels) > 0 && !slices.Contains(opts.Channels, c) {
			errs = append(errs, optErr("Fields", "channel %q is not in Channels", c))
		}
	}
	d := &PayloadDecoder{channels: channels, root: &pathNode{}, timeSlot: -1, streamSlot: -1, idSlot: -1, intern: map[string]string{}}
	add := func(field, path string) int {
		slot := len(d.paths)
		d.paths = append(d.paths, path)
		segs := strings.Split(path, ".")
		if path == "" || slices.Contains(segs, "") {
			errs = append(errs, optErr(field, "bad field path %q", path))
			return slot
		}
		n := d.root
		for _, s := range segs {
			n = n.child(s)
		}
		n.slots = append(n.slots, slot)
		return slot
	}
	seenCh := map[string]bool{}
	for _, c := range channels {
		if seenCh[c] {
			errs = append(errs, optErr("Channels", "channel %q listed twice", c))
		}
		seenCh[c] = true
		path, ok := opts.Fields[c]
		if !ok {
			path = c
		}
		add(fmt.Sprintf("Fields[%q]", c), path)
	}
	if opts.TimeField != "" {
		d.timeSlot = add("TimeField", opts.TimeField)
	}
	if opts.StreamField != "" {
		d.streamSlot = add("StreamField", opts.StreamField)
	}
	if opts.IDField != "" {
		d.idSlot = add("IDField", opts.IDField)
	}
	tp, err := newTimeParser(opts.TimeFormat, opts.Location)
	if err != nil {
		errs = append(errs, optErr("TimeFormat", "%v", err))
	}
	d.tp = tp
	d.seen = make([]uint32, len(d.paths))
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return d, nil
}

// ID returns the message id the last Decode read from the IDField (a
// number as written), or "" when there is none. It allocates the string.
func (d *PayloadDecoder) ID() string {
	if len(d.id) == 0 {
		return ""
	}
	return string(d.id)
}

// Channels returns the channels, in the order Decode fills vals.
func (d *PayloadDecoder) Channels() []string { return d.channels }

// Decode decodes payload, writing the channels' values into vals (which
// must have len(Channels()) elements). It returns the payload's time (zero
// when there is no TimeField, or the payload has none) and its stream (empty
// without a StreamField). On error vals is partly written and the error is
// a *PayloadError. A string it returns may be shared between calls.
func (d *PayloadDecoder) Decode(payload []byte, vals []float64) (time.Time, string, error) {
	if len(vals) != len(d.channels) {
		return time.Time{}, "", &PayloadError{Reason: DropInvalid, Offset: -1, Msg: fmt.Sprintf("vals has %d elements, want %d", len(vals), len(d.channels))}
	}
	d.gen++
	if d.gen == 0 {
		clear(d.seen)
		d.gen = 1
	}
	d.vals, d.t, d.stream, d.id = vals, time.Time{}, "", d.id[:0]
	s := scanner{b: payload}
	s.ws()
	if s.peek() != '{' {
		return time.Time{}, "", s.err(DropInvalid, "", "payload is not a JSON object")
	}
	if err := d.object(&s, d.root, 0); err != nil {
		return time.Time{}, "", err
	}
	s.ws()
	if s.i != len(s.b) {
		return time.Time{}, "", s.err(DropInvalid, "", "data after the JSON object")
	}
	for c := range d.channels {
		if d.seen[c] != d.gen {
			return time.Time{}, "", &PayloadError{Reason: DropMissing, Field: d.paths[c], Offset: -1, Msg: "absent or null"}
		}
	}
	if d.streamSlot >= 0 && d.seen[d.streamSlot] != d.gen {
		return time.Time{}, "", &PayloadError{Reason: DropMissing, Field: d.paths[d.streamSlot], Offset: -1, Msg: "stream field absent or null"}
	}
	return d.t, d.stream, nil
}

// object reads an object at s (at its '{'); node is the paths below it (nil
// when none are).
func (d *PayloadDecoder) object(s *scanner, node *pathNode, depth int) error {
	if depth >= maxDepth {
		return s.err(DropInvalid, "", "nested too deep")
	}
	for done := s.open('}'); !done; {
		if s.peek() != '"' {
			return s.err(DropInvalid, "", "want a key")
		}
		key, err := s.str(&d.scratch)
		if err != nil {
			return err
		}
		var child *pathNode
		if node != nil && node.children != nil {
			child = node.children[string(key)] // no allocation
		}
		if err = s.colon(); err != nil {
			return err
		}
		if child == nil {
			err = s.skip(depth + 1)
		} else {
			err = d.value(s, child, depth+1)
		}
		if err != nil {
			return err
		}
		if done, err = s.next('}'); err != nil {
			return err
		}
	}
	return nil
}

// value reads the value of a mapped path.
func (d *PayloadDecoder) value(s *scanner, node *pathNode, depth int) error {
	field := func() string {
		if len(node.slots) > 0 {
			return d.paths[node.slots[0]]
		}
		return ""
	}
	c := s.peek()
	switch {
	case c == '{':
		if len(node.slots) > 0 {
			return s.err(DropInvalid, field(), "an object, want a number or string")
		}
		return d.object(s, node, depth)
	case c == 'n':
		return s.literal("null") // absent
	case c == '"':
		start := s.i
		v, err := s.str(&d.scratch)
		if err != nil {
			return err
		}
		if len(node.slots) == 0 {
			return nil // a string where an object of mapped fields was expected: they stay missing
		}
		for _, slot := range node.slots {
			switch slot {
			case d.timeSlot:
				t, err := d.tp.parseString(bytesString(v))
				if err != nil {
					return &PayloadError{Reason: DropInvalid, Field: d.paths[slot], Offset: start, Msg: err.Error()}
				}
				d.t = t
			case d.streamSlot:
				if len(v) == 0 {
					return &PayloadError{Reason: DropMissing, Field: d.paths[slot], Offset: start, Msg: "empty stream name"}
				}
				d.stream = d.internString(v)
			case d.idSlot:
				d.id = append(d.id[:0], v...)
			default:
				return &PayloadError{Reason: DropInvalid, Field: d.paths[slot], Offset: start, Msg: "a string, want a number"}
			}
			d.seen[slot] = d.gen
		}
		return nil
	case c == '-' || (c >= '0' && c <= '9'):
		start := s.i
		if s.i+1 < len(s.b) && c == '-' && s.b[s.i+1] == 'I' {
			if err := s.literal("-Infinity"); err != nil {
				return err
			}
			return &PayloadError{Reason: DropNonFinite, Field: field(), Offset: start, Msg: "-Infinity"}
		}
		num := s.number()
		v, err := strconv.ParseFloat(bytesString(num), 64)
		if err != nil {
			var ne *strconv.NumError
			if errors.As(err, &ne) && ne.Err == strconv.ErrRange && math.IsInf(v, 0) {
				return &PayloadError{Reason: DropNonFinite, Field: field(), Offset: start, Msg: "number out of float64 range"}
			}
			return &PayloadError{Reason: DropInvalid, Field: field(), Offset: start, Msg: "malformed number"}
		}
		for _, slot := range node.slots {
			switch slot {
			case d.timeSlot:
				t, err := d.tp.parseNumber(v)
				if err != nil {
					return &PayloadError{Reason: DropInvalid, Field: d.paths[slot], Offset: start, Msg: err.Error()}
				}
				d.t = t
			case d.streamSlot:
				return &PayloadError{Reason: DropInvalid, Field: d.paths[slot], Offset: start, Msg: "a number, want a string"}
			case d.idSlot:
				d.id = append(d.id[:0], num...) // as written: 7 and 7.0 are two ids
			default:
				d.vals[slot] = v
			}
			d.seen[slot] = d.gen
		}
		return nil
	case c == 'N' || c == 'I':
		start := s.i
		lit := "NaN"
		if c == 'I' {
			lit = "Infinity"
		}
		if err := s.literal(lit); err != nil {
			return err
		}
		return &PayloadError{Reason: DropNonFinite, Field: field(), Offset: start, Msg: lit}
	default:
		start := s.i
		if err := s.skip(depth); err != nil {
			return err
		}
		if len(node.slots) == 0 {
			return nil
		}
		return &PayloadError{Reason: DropInvalid, Field: field(), Offset: start, Msg: "wrong type, want a number or string"}
	}
}

// internString returns b as a string, reusing an earlier copy when it can
// (stream names repeat).
func (d *PayloadDecoder) internString(b []byte) string {
	if s, ok := d.intern[string(b)]; ok {
		return s
	}
	s := string(b)
	if len(d.intern) < 1024 {
		d.intern[s] = s
	}
	return s
}
