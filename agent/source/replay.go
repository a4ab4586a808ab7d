package source

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Replay formats.
const (
	FormatCSV   = "csv"
	FormatJSONL = "jsonl"
)

// ReplayOptions configure a Replay. Start from DefaultReplayOptions.
type ReplayOptions struct {
	// Name is the source's name (default "replay").
	Name string
	// Stream is the stream of every sample; empty lets the router route
	// by source (or, for JSONL, Payload.StreamField decides).
	Stream string
	// Path is the file to replay.
	Path string
	// Format is FormatCSV or FormatJSONL; empty decides by the file's
	// extension (.jsonl, .ndjson → JSONL; anything else → CSV).
	Format string
	// Speed paces the rows by their timestamps: 1 is real time, 10 ten
	// times faster, 0 as fast as the sink takes them.
	Speed float64
	// Loop starts over at the end of the file, shifting the timestamps of
	// each pass so that they keep increasing.
	Loop bool
	// Retime shifts all timestamps so that the first row is at the time
	// the replay starts (the spacing is kept): an old recording then looks
	// live.
	Retime bool
	// CSV says how to read a CSV file.
	CSV CSVOptions
	// Payload says how to read the lines of a JSONL file, as for MQTT.
	// Sensor lines need a TimeField (replay is paced by it).
	Payload PayloadOptions
	// MaxLineBytes bounds a JSONL line; longer lines are dropped
	// (default 1 MiB).
	MaxLineBytes int

	// Clock paces the rows (default SystemClock).
	Clock Clock
	// Counter counts dropped rows by reason (default: none).
	Counter Counter
	// Logger receives the source's logs (default: discarded).
	Logger *slog.Logger
}

// DefaultReplayOptions returns the defaults: real-time speed, no loop,
// CSV read as SKAB's.
func DefaultReplayOptions() ReplayOptions {
	return ReplayOptions{Name: "replay", Speed: 1, MaxLineBytes: 1 << 20}
}

func (o *ReplayOptions) validate() error {
	var errs []error
	if o.Name == "" {
		o.Name = "replay"
	}
	if o.Path == "" {
		errs = append(errs, optErr("Path", "required"))
	}
	switch strings.ToLower(o.Format) {
	case "":
		switch strings.ToLower(filepath.Ext(o.Path)) {
		case ".jsonl", ".ndjson":
			o.Format = FormatJSONL
		default:
			o.Format = FormatCSV
		}
	case FormatCSV, FormatJSONL:
		o.Format = strings.ToLower(o.Format)
	default:
		errs = append(errs, optErr("Format", "must be %q or %q, got %q", FormatCSV, FormatJSONL, o.Format))
	}
	if !(o.Speed >= 0) || math.IsInf(o.Speed, 0) {
		errs = append(errs, optErr("Speed", "must be ≥ 0 (0 = as fast as possible), got %v", o.Speed))
	}
	if o.MaxLineBytes == 0 {
		o.MaxLineBytes = 1 << 20
	}
	if o.MaxLineBytes < 16 {
		errs = append(errs, optErr("MaxLineBytes", "must be ≥ 16, got %d", o.MaxLineBytes))
	}
	if o.Format == FormatJSONL && !o.Payload.Events && o.Payload.TimeField == "" {
		errs = append(errs, optErr("Payload.TimeField", "required to replay JSONL samples"))
	}
	defaults(&o.Clock, &o.Counter, &o.Logger)
	return errors.Join(errs...)
}

// Replay streams a CSV or JSONL file of samples (or, in JSONL, behaviour
// events) into the pipeline, paced by the rows' timestamps. It waits for
// the sink (Put), so a slow pipeline slows the replay down rather than
// losing rows. Bad rows are dropped, counted and logged (rate-limited) with
// their line numbers.
type Replay struct {
	core[ReplayOptions]
	dec      *PayloadDecoder
	channels []string
}

// NewReplay checks opts and the file's header (so that a file that cannot
// be read at all, or lacks a requested column, fails here) and returns the
// replay.
func NewReplay(opts ReplayOptions, sink Sink) (*Replay, error) {
	if err := checkSource("replay", opts.validate, sink); err != nil {
		return nil, err
	}
	r := &Replay{core: newCore(opts, sink, opts.Logger, opts.Name)}
	if opts.Format == FormatJSONL {
		if !opts.Payload.Events {
			dec, err := NewPayloadDecoder(opts.Payload)
			if err != nil {
				return nil, fmt.Errorf("replay options: Payload.%w", err)
			}
			r.dec = dec
			r.channels = dec.Channels()
		}
		f, err := os.Open(opts.Path)
		if err != nil {
			return nil, fmt.Errorf("replay %s: %w", opts.Name, err)
		}
		f.Close()
		return r, nil
	}
	f, err := os.Open(opts.Path)
	if err != nil {
		return nil, fmt.Errorf("replay %s: %w", opts.Name, err)
	}
	defer f.Close()
	cr, err := newCSVReader(f, opts.CSV)
	if err != nil {
		return nil, fmt.Errorf("replay %s: %s: %w", opts.Name, opts.Path, err)
	}
	r.channels = cr.channels
	return r, nil
}

// Name returns the source's name.
func (r *Replay) Name() string { return r.opts.Name }

// Channels returns the channels of the samples (nil for events).
func (r *Replay) Channels() []string { return r.channels }

// replayRow is one good row.
type replayRow struct {
	t     time.Time
	vals  []float64
	event *Event
	strm  string
}

// rowSource yields the rows of one pass over the file.
type rowSource interface {
	// next returns the next good row, io.EOF, or a *rowError.
	next() (replayRow, error)
}

// Run replays the file, once or (with Loop) until ctx ends. It returns nil
// at the end of the file or when ctx ends, and an error when the file
// cannot be read.
func (r *Replay) Run(ctx context.Context) error {
	o := r.opts
	var (
		first    = true
		t0       time.Time     // first timestamp of the first pass
		retime   time.Duration // Retime's shift
		loopOff  time.Duration // added to each pass's timestamps
		pace     = pacer{clock: o.Clock, maxLag: time.Second}
		rows     int64
		dropped  int64
		passRows int64
	)
	r.log.Info("replay started", "path", o.Path, "format", o.Format, "speed", o.Speed, "loop", o.Loop)
	for pass := 0; ; pass++ {
		f, err := os.Open(o.Path)
		if err != nil {
			return fmt.Errorf("replay %s: %w", o.Name, err)
		}
		src, err := r.open(f)
		if err != nil {
			f.Close()
			return fmt.Errorf("replay %s: %s: %w", o.Name, o.Path, err)
		}
		passRows = 0
		var passFirst, passLast, prev time.Time
		var step time.Duration
		for {
			if ctx.Err() != nil {
				f.Close()
				return nil
			}
			row, err := src.next()
			if err == io.EOF {
				break
			}
			var re *rowError
			if errors.As(err, &re) {
				dropped++
				o.Counter.Drop(o.Name, re.reason, 1)
				r.rlog.Warn("dropped a bad row", "path", o.Path, "line", re.line, "reason", re.reason, "error", re.msg)
				continue
			}
			if err != nil {
				f.Close()
				return fmt.Errorf("replay %s: %s: %w", o.Name, o.Path, err)
			}
			ts := row.t
			if passRows == 0 {
				passFirst = ts
			} else if d := ts.Sub(prev); d > 0 {
				step = d
			}
			prev, passLast = ts, ts
			passRows++
			if first {
				first = false
				t0 = ts
				pace.anchor = o.Clock.Now()
				if o.Retime {
					retime = pace.anchor.Sub(t0)
				}
			}
			ts = ts.Add(loopOff)
			if o.Speed > 0 {
				re, err := pace.wait(ctx, time.Duration(float64(ts.Sub(t0))/o.Speed))
				if err != nil {
					f.Close()
					return nil
				}
				if re {
					r.log.Warn("replay fell behind its speed; skipping ahead", "rows", rows)
				}
			}
			in := Input{Source: o.Name, Stream: o.Stream, Time: ts.Add(retime), Channels: r.channels, Values: row.vals, Event: row.event}
			if row.strm != "" {
				in.Stream = row.strm
			}
			if row.event != nil {
				row.event.Time = in.Time
			}
			if err := r.sink.Put(ctx, in); err != nil {
				f.Close()
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("replay %s: put: %w", o.Name, err)
			}
			rows++
		}
		f.Close()
		if !o.Loop {
			r.log.Info("replay done", "path", o.Path, "rows", rows, "dropped", dropped)
			return nil
		}
		if passRows == 0 {
			return fmt.Errorf("replay %s: %s: no valid rows to loop over", o.Name, o.Path)
		}
		if step <= 0 {
			step = time.Second
		}
		loopOff += passLast.Sub(passFirst) + step
	}
}

// open starts a pass over f.
func (r *Replay) open(f io.Reader) (rowSource, error) {
	if r.opts.Format == FormatJSONL {
		return &jsonlRows{r: r, br: bufio.NewReaderSize(f, 64<<10)}, nil
	}
	cr, err := newCSVReader(f, r.opts.CSV)
	if err != nil {
		return nil, err
	}
	return &csvRows{cr: cr, n: len(cr.channels)}, nil
}

type csvRows struct {
	cr *csvReader
	n  int
}

func (c *csvRows) next() (replayRow, error) {
	vals := make([]float64, c.n)
	t, _, err := c.cr.next(vals, nil)
	if err != nil {
		return replayRow{}, err
	}
	return replayRow{t: t, vals: vals}, nil
}

// jsonlRows reads one JSON object per line.
type jsonlRows struct {
	r        *Replay
	br       *bufio.Reader
	line     int
	pending  []decodedEvent // the rest of an array of events on one line
	rejected []Rejection    // its invalid events, reported one by one
	long     []byte
}

func (j *jsonlRows) next() (replayRow, error) {
	for {
		if len(j.rejected) > 0 {
			r := j.rejected[0]
			j.rejected = j.rejected[1:]
			return replayRow{}, &rowError{line: j.line, reason: r.Drop, msg: fmt.Sprintf("event %d: %s", r.Index, r.Reason)}
		}
		if len(j.pending) > 0 {
			ev := j.pending[0].event
			j.pending = j.pending[1:]
			return replayRow{t: ev.Time, event: &ev, strm: j.r.eventStream(&ev)}, nil
		}
		line, err := j.readLine()
		if err != nil {
			return replayRow{}, err
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		if j.r.dec == nil {
			lim := DefaultEventLimits()
			lim.MaxFuture = 0 // a recording's time is its own, not this clock's
			evs, rejected, err := decodeEvents(line, j.r.opts.Clock.Now(), lim)
			if err != nil {
				return replayRow{}, &rowError{line: j.line, reason: DropInvalid, msg: err.Error()}
			}
			j.pending, j.rejected = evs, rejected
			continue
		}
		vals := make([]float64, len(j.r.channels))
		t, stream, err := j.r.dec.Decode(line, vals)
		if err != nil {
			var pe *PayloadError
			reason := DropInvalid
			if errors.As(err, &pe) {
				reason = pe.Reason
			}
			return replayRow{}, &rowError{line: j.line, reason: reason, msg: err.Error()}
		}
		if t.IsZero() {
			return replayRow{}, &rowError{line: j.line, reason: DropMissing, msg: fmt.Sprintf("no time in field %q", j.r.opts.Payload.TimeField)}
		}
		return replayRow{t: t, vals: vals, strm: stream}, nil
	}
}

// readLine returns the next line; a line longer than MaxLineBytes comes
// back as a *rowError after it was skipped.
func (j *jsonlRows) readLine() ([]byte, error) {
	j.line++
	j.long = j.long[:0]
	for {
		frag, err := j.br.ReadSlice('\n')
		if len(j.long)+len(frag) > j.r.opts.MaxLineBytes {
			// Skip the rest of the line.
			for err == bufio.ErrBufferFull {
				_, err = j.br.ReadSlice('\n')
			}
			if err != nil && err != io.EOF {
				return nil, err
			}
			return nil, &rowError{line: j.line, reason: DropInvalid, msg: fmt.Sprintf("line longer than %d bytes", j.r.opts.MaxLineBytes)}
		}
		switch err {
		case nil:
			if len(j.long) == 0 {
				return frag, nil
			}
			return append(j.long, frag...), nil
		case bufio.ErrBufferFull:
			j.long = append(j.long, frag...)
		case io.EOF:
			if len(j.long)+len(frag) == 0 {
				return nil, io.EOF
			}
			return append(j.long, frag...), nil
		default:
			return nil, err
		}
	}
}

// eventStream routes a replayed event by Payload.StreamField, a key of its
// properties, when set.
func (r *Replay) eventStream(ev *Event) string {
	if f := r.opts.Payload.StreamField; f != "" {
		if s, ok := ev.Properties[f].(string); ok {
			return s
		}
	}
	return ""
}
