// Package episodes keeps a ledger of the alert episodes that are open, in a
// file beside the buffer, so that the next start closes the episodes a
// stopped process left open: after a crash, a SIGKILL, a power cut or a
// clean stop, an episode gets its "closed" alert instead of staying open for
// ever on the operator's dashboard.
//
// The ledger sits between the pipeline and the buffer (Wrap): every alert
// the buffer accepts is written to the ledger as one JSON line, after the
// buffer took it. Reading the file back gives each episode's last alert; an
// episode whose last alert is not "closed" was open. Open then builds the
// closes for those (Orphans), which the daemon appends before the pipeline
// starts: each is the episode's next update, under its model, at the start,
// with a Reason that says why, and an id derived from the episode's last
// alert, so that closing the same orphan twice (a crash during the start)
// gives the same alert id, which the consumers deduplicate.
//
// The detection state itself (hysteresis, the span of normal windows) does
// not survive a restart, so an anomaly that goes on after one opens a new
// episode: closing the old one is the honest account of what Vigil knows.
//
// The file is appended to without fsync: a process crash loses nothing (the
// page cache outlives the process), a power cut may lose the last lines, and
// a torn last line is skipped on reading. The file is rewritten with just the
// open episodes (to a temporary file, synced, renamed) at Open and whenever
// it holds many more lines than open episodes.
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
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/vigil-edge/vigil/agent/record"
)

// Appender is where alerts go: the buffer, or what wraps it.
type Appender interface {
	Append(ctx context.Context, lane string, data ...[]byte) ([]uint64, error)
}

// closeSeq is the id sequence of a restart's close: the pipeline's own
// alerts use 0 and up, the closes of a reload -1.
const closeSeq = -2

// Reason is the Reason of the closes Orphans builds.
const Reason = "vigil restarted with this episode open (after a crash or a stop); its detection state did not survive the restart, so the episode is closed here, and an anomaly that goes on opens a new one"

// compactMin is the fewest lines a ledger holds before it is compacted.
const compactMin = 1024

// Ledger is the record of open episodes. Its methods are safe for
// concurrent use.
type Ledger struct {
	mu      sync.Mutex
	path    string
	f       *os.File
	open    map[string]record.Alert // episode id → its last alert
	lines   int                     // lines in the file
	orphans []record.Alert          // open when the ledger was opened
	log     *slog.Logger
	err     error // the last write error, logged once
}

// Open reads the ledger at path (a missing file is an empty ledger), keeps
// the episodes it finds open as orphans, and rewrites the file with them
// alone. The directory is created if missing.
func Open(path string, log *slog.Logger) (*Ledger, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Ledger{path: path, open: map[string]record.Alert{}, log: log}
	skipped, err := l.read()
	if err != nil {
		return nil, err
	}
	if skipped > 0 {
		log.Warn("episode ledger: skipped lines that do not decode (a torn write)", "path", path, "lines", skipped)
	}
	for _, id := range slices.Sorted(maps.Keys(l.open)) {
		l.orphans = append(l.orphans, l.open[id])
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("episode ledger: %w", err)
	}
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

// Orphans returns the closes, at now (the start), of the episodes that
// were open when the ledger was opened, encoded for the alert lane, in a
// stable order. A close's window runs from the episode's last alert to now:
// the span of which Vigil knows nothing. Its id depends on the last alert
// alone.
func (l *Ledger) Orphans(now time.Time) [][]byte {
	out := make([][]byte, 0, len(l.orphans))
	for _, a := range l.orphans {
		ts := now
		if ts.Before(a.TS) {
			ts = a.TS // a stream whose clock runs ahead of this one
		}
		c := record.Alert{
			ID:     record.IDSeq(record.LaneAlert, a.Device, a.Stream, a.Key, a.TS, a.Model, closeSeq),
			TS:     ts,
			Device: a.Device, Stream: a.Stream, Key: a.Key, Kind: a.Kind,
			Threshold: a.Threshold, Severity: a.Severity, Episode: a.Episode,
			Update: a.Update + 1, State: "closed",
			Window:      record.Window{Start: a.TS, End: ts},
			TopFeatures: []record.Feature{},
			Model:       a.Model, Replayed: a.Replayed, Reason: Reason,
		}
		data, err := json.Marshal(c)
		if err != nil {
			continue // a record.Alert always encodes
		}
		out = append(out, data)
	}
	return out
}

// OpenEpisodes returns the number of episodes open now.
func (l *Ledger) OpenEpisodes() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.open)
}

// Wrap returns an Appender that appends to inner and notes the alerts inner
// accepted.
func (l *Ledger) Wrap(inner Appender) Appender { return wrapped{l: l, inner: inner} }

type wrapped struct {
	l     *Ledger
	inner Appender
}

func (w wrapped) Append(ctx context.Context, lane string, data ...[]byte) ([]uint64, error) {
	seqs, err := w.inner.Append(ctx, lane, data...)
	if err == nil && lane == record.LaneAlert {
		w.l.add(data)
	}
	return seqs, err
}

// add writes accepted alerts to the ledger. A write that fails is logged
// once (the buffer has the alerts; only a restart's closes are at stake).
func (l *Ledger) add(data [][]byte) {
	var b bytes.Buffer
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, d := range data {
		var a record.Alert
		if err := json.Unmarshal(d, &a); err != nil || a.Episode == "" {
			continue
		}
		l.note(a)
		b.Write(bytes.TrimSpace(d))
		b.WriteByte('\n')
		l.lines++
	}
	if b.Len() == 0 {
		return
	}
	err := l.write(b.Bytes())
	if err == nil && l.lines >= compactMin && l.lines > 4*len(l.open) {
		err = l.compact()
	}
	switch {
	case err != nil && l.err == nil:
		l.log.Error("episode ledger: writing failed; a restart may leave episodes open", "path", l.path, "err", err)
	case err == nil && l.err != nil:
		l.log.Info("episode ledger: writing works again", "path", l.path)
	}
	l.err = err
}

func (l *Ledger) write(p []byte) error {
	if l.f == nil {
		return l.compact() // the last compaction failed: the open set is whole in memory
	}
	if _, err := l.f.Write(p); err != nil {
		return fmt.Errorf("episode ledger: %w", err)
	}
	return nil
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
	tmp := l.path + ".tmp"
	if err := writeSynced(tmp, b.Bytes()); err != nil {
		return fmt.Errorf("episode ledger: %w", err)
	}
	if err := os.Rename(tmp, l.path); err != nil {
		return fmt.Errorf("episode ledger: %w", err)
	}
	if d, err := os.Open(filepath.Dir(l.path)); err == nil {
		d.Sync() // the rename, on file systems that need it
		d.Close()
	}
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("episode ledger: %w", err)
	}
	l.f, l.lines = f, len(l.open)
	return nil
}

func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Close closes the file.
func (l *Ledger) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
