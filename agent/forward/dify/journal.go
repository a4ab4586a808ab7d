package dify

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/vigil-edge/vigil/agent/record"
)

// journalEntry is a record of the journal lane.
type journalEntry struct {
	AlertID  string    `json:"alert_id"`
	AlertSeq uint64    `json:"alert_seq"`
	TS       time.Time `json:"ts"`
	// Done marks an alert handled for good: its advice or dead letter is
	// stored.
	Done bool `json:"done,omitempty"`
}

// doneEntry is a handled alert's id and the journal record that says so.
type doneEntry struct {
	id  string
	seq uint64 // 0: not journaled (nothing to acknowledge)
}

// journaled is what the journal holds for one alert.
type journaled struct {
	alertSeq uint64
	seqs     []uint64  // journal records to acknowledge when done
	at       time.Time // the earliest entry: when a run was first requested
}

// loadJournal reads the journal: the open entries by alert id, and the
// handled alerts, oldest first. Open entries of a handled alert (a crash
// came between its done entry and their acknowledgement) are
// acknowledged.
func (f *Forwarder) loadJournal() (map[string]*journaled, []doneEntry, error) {
	recs, err := f.buf.Read(Consumer, LaneJournal, 1<<20)
	if err != nil {
		return nil, nil, fmt.Errorf("read journal: %w", err)
	}
	out := map[string]*journaled{}
	var finished []doneEntry
	isDone := map[string]bool{}
	var junk []uint64
	for _, rec := range recs {
		var e journalEntry
		if json.Unmarshal(rec.Data, &e) != nil || e.AlertID == "" {
			junk = append(junk, rec.Seq)
			continue
		}
		if e.Done {
			finished = append(finished, doneEntry{id: e.AlertID, seq: rec.Seq})
			isDone[e.AlertID] = true
			continue
		}
		j := out[e.AlertID]
		if j == nil {
			j = &journaled{alertSeq: e.AlertSeq, at: e.TS}
			out[e.AlertID] = j
		}
		j.seqs = append(j.seqs, rec.Seq)
		if e.TS.Before(j.at) {
			j.at = e.TS
		}
	}
	if len(junk) > 0 {
		f.log.Warn("dropping undecodable journal entries", "count", len(junk))
	}
	for id, j := range out {
		if isDone[id] {
			junk = append(junk, j.seqs...)
			delete(out, id)
		}
	}
	if len(junk) > 0 {
		if err := f.buf.Ack(Consumer, LaneJournal, junk...); err != nil {
			return nil, nil, fmt.Errorf("ack journal: %w", err)
		}
	}
	return out, finished, nil
}

// writeJournal records that a run for the alert is about to be requested.
func (f *Forwarder) writeJournal(ctx context.Context, a *record.Alert, seq uint64) (*journaled, error) {
	now := f.clock.Now()
	data, err := json.Marshal(journalEntry{AlertID: a.ID, AlertSeq: seq, TS: now})
	if err != nil {
		return nil, err
	}
	seqs, err := f.buf.Append(ctx, LaneJournal, data)
	if err != nil {
		return nil, err
	}
	return &journaled{alertSeq: seq, seqs: seqs, at: now}, nil
}

// writeDone records that the alert is handled for good and returns the
// record's sequence number.
func (f *Forwarder) writeDone(ctx context.Context, a *record.Alert, seq uint64) (uint64, error) {
	data, err := json.Marshal(journalEntry{AlertID: a.ID, AlertSeq: seq, TS: f.clock.Now(), Done: true})
	if err != nil {
		return 0, err
	}
	seqs, err := f.buf.Append(ctx, LaneJournal, data)
	if err != nil {
		return 0, err
	}
	return seqs[0], nil
}
