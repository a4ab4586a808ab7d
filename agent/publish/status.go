package publish

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/fsx"
)

// Status is the retained message on <prefix>/<device>/status.
type Status struct {
	// State is "online" or "offline".
	State string `json:"state"`
	// Since is when the state began: the connection time for "online", the
	// shutdown time for a clean "offline". The Last Will cannot know when
	// it fires, so it has none.
	Since time.Time `json:"since,omitzero"`
	// Device is the device id.
	Device string `json:"device"`
	// Version is the agent's version.
	Version string `json:"version,omitempty"`
	// BirthSeq numbers the connections of the device: it increases on
	// every connection, across restarts. The Last Will of a connection
	// carries the connection's number.
	BirthSeq uint64 `json:"birth_seq"`
	// Models lists the loaded models as name@version.
	Models []string `json:"models"`
	// Reason says why a device is offline: "shutdown" or "connection lost".
	Reason string `json:"reason,omitempty"`
	// Broker is, while online, the broker the device is connected to (a
	// node of a cluster, when several are configured).
	Broker string `json:"broker,omitempty"`
}

func (p *Publisher) statusPayload(state string, birth uint64, since time.Time, reason string) []byte {
	st := Status{
		State:    state,
		Since:    since.UTC(),
		Device:   p.opts.Device,
		Version:  p.opts.Version,
		BirthSeq: birth,
		Models:   []string{},
		Reason:   reason,
	}
	if since.IsZero() {
		st.Since = time.Time{}
	}
	if state == "online" {
		p.mu.Lock()
		st.Broker = p.broker
		p.mu.Unlock()
	}
	if p.opts.Models != nil {
		if m := p.opts.Models(); m != nil {
			st.Models = m
		}
	}
	b, err := json.Marshal(st)
	if err != nil { // cannot happen: only strings, a time and a number
		panic(fmt.Sprintf("publish: marshal status: %v", err))
	}
	return b
}

// Rebirth publishes the retained "online" status again, with the current
// models, and a health message. The birth number stays the connection's:
// the Last Will, fixed when connecting, carries it too.
func (p *Publisher) Rebirth() error {
	s := p.current()
	if s == nil {
		return fmt.Errorf("rebirth: %w", ErrNotConnected)
	}
	tok := s.cl.Publish(p.status, 1, true, p.statusPayload("online", s.birth, s.since, ""))
	if !waitToken(tok, p.opts.WriteTimeout, s.lost) {
		return fmt.Errorf("rebirth: publish status: %w", tokenErr(tok))
	}
	if err := p.PublishHealth(); err != nil {
		return fmt.Errorf("rebirth: %w", err)
	}
	return nil
}

// tokenErr is the error of a token that did not complete in time, or its
// own error.
func tokenErr(tok interface{ Error() error }) error {
	if err := tok.Error(); err != nil {
		return err
	}
	return errors.New("no acknowledgement in time")
}

// birthFile is the name of the file in Options.StateDir that keeps the
// birth sequence number.
const birthFile = "mqtt-birth-seq"

// birthStore keeps the last birth sequence number, in a file when it has a
// path.
type birthStore struct {
	path string
	mu   sync.Mutex
	last uint64
}

func loadBirth(dir string) (*birthStore, error) {
	b := &birthStore{}
	if dir == "" {
		return b, nil
	}
	b.path = filepath.Join(dir, birthFile)
	fsx.CleanTemps(b.path)         // a save a crash cut short
	_ = os.Remove(b.path + ".tmp") // the same, by a version before fsx
	data, err := os.ReadFile(b.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return b, nil
	case err != nil:
		return nil, fmt.Errorf("read birth sequence: %w", err)
	}
	n, err := strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64)
	if err != nil {
		return nil, fmt.Errorf("birth sequence file %s is damaged (%q); delete it to start again at 1", b.path, strings.TrimSpace(string(data)))
	}
	b.last = n
	return b, nil
}

// next is the number the next connection gets.
func (b *birthStore) next() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.last + 1
}

// current is the number of the current or last connection.
func (b *birthStore) current() uint64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.last
}

// commit records n as used and saves it (fsx.WriteFileAtomic).
func (b *birthStore) commit(n uint64) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.last = n
	if b.path == "" {
		return nil
	}
	if err := fsx.WriteFileAtomic(b.path, []byte(strconv.FormatUint(n, 10)+"\n"), 0o644, nil); err != nil {
		return fmt.Errorf("save birth sequence: %w", err)
	}
	return nil
}
