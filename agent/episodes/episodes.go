// Package episodes keeps a ledger of the alert episodes that are open, in a
// file beside the buffer, so that a restart closes the episodes a stopped
// process left open: after a crash, a SIGKILL, a power cut or a clean stop,
// an episode gets its "closed" alert instead of staying open for ever on the
// operator's dashboard.
//
// The ledger sits between the pipeline and the buffer (Wrap). Every alert is
// written to the ledger as one JSON line before the buffer takes it (a buffer
// that refuses it gets the episode's previous line written back). Reading
// the file gives each episode's last alert; an episode whose last alert is
// not "closed" was open: an orphan.
//
// An orphan is closed once it is clear the restarted process will not carry
// it on. A replayed recording scores its windows again after a restart and
// gives the same episode the same id: an alert of the orphan's episode means
// it goes on, and it is no orphan any more. Otherwise the first score of the
// orphan's stream and key whose window ends after the orphan's last alert
// closes it, as does a start whose config no longer has its stream
// (Ledger.Removed), and a wait after the start in which its stream and key
// scored nothing at all (Ledger.Silent: a sensor that died with the
// process, a user who did not come back; a replay that scores, even windows
// from before the orphan, is left to catch up). The close is the episode's
// next update, under its model, at that moment, with a reason that says why;
// its id is derived from the episode's last alert, so that closing the same
// orphan twice (after another crash) gives the same id, which the consumers
// deduplicate.
//
// The detection state itself (hysteresis, the span of normal windows) does
// not survive a restart, so an anomaly that goes on after one opens a new
// episode: closing the old one is the honest account of what Vigil knows.
//
// Each append is written before the buffer takes the alerts and fsynced
// right after, so an alert the buffer holds is in the ledger after a
// SIGKILL (the page cache outlives the process) and, once the append has
// returned, after a power cut too. A torn last line is skipped on reading.
// A crash between the ledger's line and the buffer's commit leaves an
// orphan whose alert the buffer never took; its close then stands alone.
// The file is rewritten with just the open episodes (fsx.WriteFileAtomic)
// at Open and whenever it holds many more lines than open episodes.
package episodes

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/fsx"
	"github.com/vigil-edge/vigil/agent/record"
)

// Appender is where alerts go: the buffer, or what wraps it.
type Appender interface {
	Append(ctx context.Context, lane string, data ...[]byte) ([]uint64, error)
}

// closeSeq is the id sequence of an orphan's close: the pipeline's own
// alerts use 0 and up, the closes of a reload -1.
const closeSeq = -2

// Reason is the Reason of an orphan's close.
const Reason = "vigil restarted with this episode open (after a crash or a stop); its detection state did not survive the restart, so the episode is closed here, and an anomaly that goes on opens a new one"

// SilentReason is the Reason of the close of an orphan whose stream scored
// nothing in the wait after the restart.
const SilentReason = "vigil restarted with this episode open (after a crash or a stop), and its stream has scored nothing since (streams[].episode.orphan_after); its detection state did not survive the restart, so the episode is closed here"

// compactMin is the fewest lines a ledger holds before it is compacted.
const compactMin = 1024

// Ledger is the record of open episodes. Its methods are safe for
// concurrent use.
type Ledger struct {
	mu       sync.Mutex
	path     string
	f        *os.File
	open     map[string]record.Alert // episode id → its last alert
	lines    int                     // lines in the file
	orphans  map[string]record.Alert // episode id → its last alert, for episodes open at Open and not yet resolved
	scored   map[string]bool         // orphans whose stream and key scored something since Open
	silenced map[string]bool         // orphans Silent closed, to tell of an alert that carries one on
	nOrphan  atomic.Int64            // len(orphans), read without the lock
	opened   time.Time               // when Open ran
	now      func() time.Time
	log      *slog.Logger
	err      error // the last write error, logged once
	closed   bool
}

// Open reads the ledger at path (a missing file is an empty ledger), keeps
// the episodes it finds open as orphans, and rewrites the file with them
// alone. The directory is created if missing. now is the clock of the
// closes (nil: time.Now).
func Open(path string, log *slog.Logger, now func() time.Time) (*Ledger, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if now == nil {
		now = time.Now
	}
	l := &Ledger{path: path, open: map[string]record.Alert{}, scored: map[string]bool{}, silenced: map[string]bool{}, log: log, now: now, opened: now()}
	skipped, err := l.read()
	if err != nil {
		return nil, err
	}
	if skipped > 0 {
		log.Warn("episode ledger: skipped lines that do not decode (a torn write)", "path", path, "lines", skipped)
	}
	l.orphans = maps.Clone(l.open)
	l.nOrphan.Store(int64(len(l.orphans)))
	fsx.CleanTemps(path) // a compaction a crash cut short
	if err := l.compact(); err != nil {
		return nil, err
	}
	return l, nil
}

// read loads the file's episodes into l.open and returns how many lines it
// skipped.
func (l *Ledger) read() (skipped int, err error) {
	f, err := os.Open(l.path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("episode ledger: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		var a record.Alert
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil || a.Episode == "" {
			skipped++
			continue
		}
		l.note(a)
	}
	if err := sc.Err(); err != nil {
		return skipped, fmt.Errorf("episode ledger %s: %w", l.path, err)
	}
	return skipped, nil
}

// note applies one alert to the open set.
func (l *Ledger) note(a record.Alert) {
	if a.State == "closed" {
		delete(l.open, a.Episode)
		return
	}
	l.open[a.Episode] = a
}

// Orphans returns the number of orphans not yet closed or carried on.
func (l *Ledger) Orphans() int { return int(l.nOrphan.Load()) }

// OpenEpisodes returns the number of episodes open now, orphans included.
func (l *Ledger) OpenEpisodes() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.open)
}

// Removed returns the closes of the orphans whose stream keep says is gone,
// encoded for the alert lane, in a stable order; the caller appends them
// through Wrap.
func (l *Ledger) Removed(keep func(stream string) bool) [][]byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out [][]byte
	for _, id := range slices.Sorted(maps.Keys(l.orphans)) {
		if a := l.orphans[id]; !keep(a.Stream) {
			out = append(out, l.closeOf(a, Reason))
		}
	}
	return out
}

// Silent returns the closes of the orphans whose stream and key have
// scored nothing since Open and whose wait, after(stream) from Open, has
// passed (0: wait for ever), encoded for the alert lane in a stable order;
// the caller appends them through Wrap. They are no orphans any more
// afterwards, whether the append works or not (as with Removed, the next
// start tries again). next is how long until the next orphan's wait ends,
// 0 when no orphan waits any more.
func (l *Ledger) Silent(after func(stream string) time.Duration) (closes [][]byte, next time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, 0
	}
	elapsed := l.now().Sub(l.opened)
	for _, id := range slices.Sorted(maps.Keys(l.orphans)) {
		a := l.orphans[id]
		wait := after(a.Stream)
		switch {
		case wait <= 0 || l.scored[id]:
		case elapsed >= wait:
			closes = append(closes, l.closeOf(a, SilentReason))
			l.forget(id)
			l.silenced[id] = true
		case next == 0 || wait-elapsed < next:
			next = wait - elapsed
		}
	}
	return closes, next
}

// forget drops orphan id; l.mu is held.
func (l *Ledger) forget(id string) {
	delete(l.orphans, id)
	delete(l.scored, id)
	l.nOrphan.Add(-1)
}

// closeOf is the encoded close of orphan a; l.mu is held.
func (l *Ledger) closeOf(a record.Alert, reason string) []byte {
	ts := l.now()
	if ts.Before(a.TS) {
		ts = a.TS // a stream whose clock runs ahead of this one
	}
	data, _ := json.Marshal(record.Alert{ // a record.Alert always encodes
		ID:     record.IDSeq(record.LaneAlert, a.Device, a.Stream, a.Key, a.TS, a.Model, closeSeq),
		TS:     ts,
		Device: a.Device, Stream: a.Stream, Key: a.Key, Kind: a.Kind,
		Threshold: a.Threshold, Severity: a.Severity, Episode: a.Episode,
		Update: a.Update + 1, State: "closed",
		// The span of which Vigil knows nothing.
		Window:      record.Window{Start: a.TS, End: ts},
		TopFeatures: []record.Feature{},
		Model:       a.Model, Replayed: a.Replayed, Reason: reason,
	})
	return data
}

// Wrap returns an Appender that appends to inner, keeps the ledger and
// closes orphans as their streams move past them.
func (l *Ledger) Wrap(inner Appender) Appender { return wrapped{l: l, inner: inner} }

type wrapped struct {
	l     *Ledger
	inner Appender
}

func (w wrapped) Append(ctx context.Context, lane string, data ...[]byte) ([]uint64, error) {
	switch lane {
	case record.LaneAlert:
		return w.l.appendAlerts(ctx, w.inner, data)
	case record.LaneScore:
		seqs, err := w.inner.Append(ctx, lane, data...)
		if err == nil && w.l.nOrphan.Load() > 0 {
			w.l.closePassed(ctx, w.inner, data)
		}
		return seqs, err
	}
	return w.inner.Append(ctx, lane, data...)
}

// appendAlerts notes alerts in the ledger, appends them to inner, and
// writes back what was there if inner refuses them. The lock is held
// throughout, so that the file's order is the buffer's.
func (l *Ledger) appendAlerts(ctx context.Context, inner Appender, data [][]byte) ([]uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var (
		b    bytes.Buffer
		prev = map[string]*record.Alert{} // episode → its entry before, nil for none
	)
	for _, d := range data {
		var a record.Alert
		if err := json.Unmarshal(d, &a); err != nil || a.Episode == "" {
			continue
		}
		if _, ok := l.orphans[a.Episode]; ok {
			// The episode goes on: a replay scored its windows again.
			l.forget(a.Episode)
		}
		if l.silenced[a.Episode] && a.State != "closed" {
			// Kept (no alert is dropped), but the consumers have seen
			// its close: orphan_after was shorter than the wait for
			// the stream to come back.
			delete(l.silenced, a.Episode)
			l.log.Warn("an episode closed because its stream was silent after the restart goes on: its stream came back later than its orphan_after", "episode", a.Episode, "stream", a.Stream)
		}
		if _, seen := prev[a.Episode]; !seen {
			if p, ok := l.open[a.Episode]; ok {
				prev[a.Episode] = &p
			} else {
				prev[a.Episode] = nil
			}
		}
		l.note(a)
		b.Write(bytes.TrimSpace(d))
		b.WriteByte('\n')
		l.lines++
	}
	l.write(b.Bytes())
	// The line is in the page cache: a SIGKILL from here on finds it. It
	// is fsynced once the buffer has the alerts, not before or beside:
	// anything that delays the buffer's commit widens the gap in which a
	// kill leaves a line whose alert the buffer never took.
	seqs, err := inner.Append(ctx, record.LaneAlert, data...)
	l.sync()
	if err != nil && len(prev) > 0 {
		b.Reset()
		for _, ep := range slices.Sorted(maps.Keys(prev)) {
			p := prev[ep]
			if p == nil {
				p = &record.Alert{Episode: ep, State: "closed"} // it was not open
			}
			line, _ := json.Marshal(p)
			b.Write(line)
			b.WriteByte('\n')
			l.lines++
			l.note(*p)
		}
		l.write(b.Bytes())
		l.sync()
	}
	return seqs, err
}

// closePassed closes the orphans whose stream and key scored a window that
// ends after their last alert, and notes those that scored any window.
func (l *Ledger) closePassed(ctx context.Context, inner Appender, scores [][]byte) {
	latest := map[[2]string]time.Time{} // stream, key → the batch's last window end
	for _, d := range scores {
		var s struct {
			TS          time.Time
			Stream, Key string
		}
		if json.Unmarshal(d, &s) == nil {
			if k := [2]string{s.Stream, s.Key}; s.TS.After(latest[k]) {
				latest[k] = s.TS
			}
		}
	}
	var closes [][]byte
	l.mu.Lock()
	for _, id := range slices.Sorted(maps.Keys(l.orphans)) {
		a := l.orphans[id]
		end, ok := latest[[2]string{a.Stream, a.Key}]
		switch {
		case end.After(a.TS):
			closes = append(closes, l.closeOf(a, Reason))
			l.forget(id)
		case ok:
			l.scored[id] = true
		}
	}
	l.mu.Unlock()
	if len(closes) == 0 {
		return
	}
	if _, err := l.appendAlerts(ctx, inner, closes); err != nil {
		l.log.Error("closing episodes the last run left open failed; the next start tries again", "episodes", len(closes), "err", err)
		return
	}
	l.log.Info("closed episodes the last run left open", "episodes", len(closes))
}

// write appends lines to the file and compacts it when it has grown; l.mu
// is held. A failure is logged once (the buffer has the alerts; only a
// restart's closes are at stake). The lines are in the page cache, which
// outlives the process; syncBeside makes them durable.
func (l *Ledger) write(p []byte) {
	if len(p) == 0 || l.closed {
		return
	}
	var err error
	if l.f == nil {
		err = l.compact() // the last write failed: the open set is whole in memory
	} else if _, err = l.f.Write(p); err != nil {
		err = l.drop(err)
	}
	if err == nil && l.lines >= compactMin && l.lines > 4*len(l.open) {
		err = l.compact()
	}
	l.report(err)
}

// sync fsyncs the file; l.mu is held.
func (l *Ledger) sync() {
	if l.f == nil || l.closed {
		return
	}
	if err := l.f.Sync(); err != nil {
		l.report(l.drop(err))
	}
}

// drop stops appending after a failed write or fsync: a short write leaves
// a fragment the next line would be glued to, and a failed fsync may have
// dropped the pages. The next write rewrites the file from memory. l.mu is
// held.
func (l *Ledger) drop(err error) error {
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
	return fmt.Errorf("episode ledger: %w", err)
}

// report logs a change between failing and working writes; l.mu is held.
func (l *Ledger) report(err error) {
	switch {
	case err != nil && l.err == nil:
		l.log.Error("episode ledger: writing failed; a restart may leave episodes open", "path", l.path, "err", err)
	case err == nil && l.err != nil:
		l.log.Info("episode ledger: writing works again", "path", l.path)
	}
	l.err = err
}

// compact rewrites the file with the open episodes alone and reopens it
// for appending; l.mu is held (or l is not shared yet).
func (l *Ledger) compact() error {
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
	var b bytes.Buffer
	for _, id := range slices.Sorted(maps.Keys(l.open)) {
		data, err := json.Marshal(l.open[id])
		if err != nil {
			continue
		}
		b.Write(data)
		b.WriteByte('\n')
	}
	if err := fsx.WriteFileAtomic(l.path, b.Bytes(), 0o644, nil); err != nil {
		return fmt.Errorf("episode ledger: %w", err)
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("episode ledger: %w", err)
	}
	l.f, l.lines = f, len(l.open)
	return nil
}

// Close closes the file.
func (l *Ledger) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
