package source

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/journal"
)

// eventJournal makes the events of a request durable before HTTPEvents
// answers 202 (HTTPEventsOptions.JournalDir): each valid event of the
// request is appended to a journal and fsynced, and on start the journal's
// events are put into the pipeline again, so that events acknowledged just
// before a crash are scored after it. The journal keeps events for one to
// two JournalRetention periods; events that were scored before the crash
// and are still in the journal are scored again after it (their scores
// carry the same ids when their windows close the same way).
type eventJournal struct {
	shared *sharedJournal
}

// journalRecord is one event in the journal.
type journalRecord struct {
	Time  time.Time `json:"ts"`
	Event *Event    `json:"event"`
}

// sharedJournal is the one journal of a directory in this process. Every
// generation of the HTTP source (a reload builds a new one) writes to it,
// and the records found at open are handed out once: a reload does not
// replay them again, a restart (a new process) does.
type sharedJournal struct {
	j       *journal.Journal
	mu      sync.Mutex
	pending [][]byte
}

var journals = struct {
	sync.Mutex
	m map[string]*sharedJournal
}{m: map[string]*sharedJournal{}}

// openEventJournal returns the process's journal in dir, opening it the
// first time.
func openEventJournal(dir string, retention time.Duration) (*eventJournal, error) {
	dir = filepath.Clean(dir)
	journals.Lock()
	defer journals.Unlock()
	if s, ok := journals.m[dir]; ok {
		return &eventJournal{shared: s}, nil
	}
	j, recs, err := journal.Open(dir, retention, nil)
	if err != nil {
		return nil, err
	}
	s := &sharedJournal{j: j, pending: recs}
	journals.m[dir] = s
	return &eventJournal{shared: s}, nil
}

// write appends the events and fsyncs them.
func (e *eventJournal) write(evs []decodedEvent) error {
	recs := make([][]byte, 0, len(evs))
	for i := range evs {
		b, err := json.Marshal(journalRecord{Time: evs[i].event.Time, Event: &evs[i].event})
		if err != nil {
			return err
		}
		recs = append(recs, b)
	}
	return e.shared.j.Append(recs...)
}

// take returns the events found in the journal at open, once per process.
func (e *eventJournal) take(log *slog.Logger) []Event {
	e.shared.mu.Lock()
	recs := e.shared.pending
	e.shared.pending = nil
	e.shared.mu.Unlock()
	out := make([]Event, 0, len(recs))
	for _, r := range recs {
		var jr journalRecord
		if err := json.Unmarshal(r, &jr); err != nil || jr.Event == nil {
			log.Warn("skipped an unreadable journal record", "error", err)
			continue
		}
		jr.Event.Time = jr.Time
		out = append(out, *jr.Event)
	}
	return out
}

// replay puts the journal's events into the sink, blocking, before the
// handler accepts new ones; events seen already (their ids are reserved in
// the dedup window, so a client's retry after the restart is a duplicate)
// are skipped.
func (h *HTTPEvents) replay(ctx context.Context) error {
	evs := h.journal.take(h.log)
	now := h.opts.Clock.Now()
	n := 0
	for i := range evs {
		ev := evs[i]
		if !h.dedup.reserve(dedupKey(&ev), now) {
			continue
		}
		if err := h.sink.Put(ctx, Input{Source: h.opts.Name, Stream: h.stream(&ev), Time: ev.Time, Event: &ev}); err != nil {
			return fmt.Errorf("replay the events journal: %w", err)
		}
		n++
	}
	if len(evs) > 0 {
		h.log.Info("replayed accepted events from the journal", "events", n, "skipped_duplicates", len(evs)-n)
	}
	return nil
}
