package buffer

import (
	"context"
	"fmt"
	"time"
)

// Memory is a buffer held in memory, for tests and for devices without
// storage. It behaves like [Badger] in every respect but one: nothing
// survives the process, whatever the lanes' [Durability].
type Memory struct {
	opts Options

	core[[]byte] // mu, st, closed; LastSeq and Notify
}

// memHooks: Memory keeps nothing outside the index, so it has nothing to do
// when the state changes.
type memHooks struct{}

func (memHooks) removed(*lane[[]byte], slot[[]byte], bool) {}
func (memHooks) cursorChanged(*lane[[]byte], string)       {}
func (memHooks) cursorRemoved(*lane[[]byte], string)       {}

// NewMemory returns an empty in-memory buffer.
func NewMemory(opts Options) (*Memory, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	return &Memory{opts: opts, core: core[[]byte]{st: newState[[]byte](opts, memHooks{})}}, nil
}

// Append stores copies of data as new records of lane. See [Buffer].
func (m *Memory) Append(ctx context.Context, lane string, data ...[]byte) ([]uint64, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("append to lane %q: %w", lane, err)
	}
	need, err := checkSizes(lane, data, m.opts.MaxRecordBytes)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, fmt.Errorf("append to lane %q: %w", lane, ErrClosed)
	}
	l, err := m.st.lane(lane)
	if err != nil {
		return nil, fmt.Errorf("append: %w", err)
	}
	if len(data) == 0 {
		return nil, nil
	}
	at := m.st.appendTime(l)
	m.st.expire(l, at)
	if err := m.st.makeRoom(l, need, len(data)); err != nil {
		return nil, fmt.Errorf("append: %w", err)
	}
	seqs := make([]uint64, len(data))
	for i, d := range data {
		size := int64(len(d)) + RecordOverhead(lane)
		seqs[i] = m.st.add(l, size, at, append([]byte(nil), d...))
	}
	l.done = seqs[len(seqs)-1]
	l.signal()
	return seqs, nil
}

// checkSizes rejects records larger than max and returns the stored bytes
// of all.
func checkSizes(lane string, data [][]byte, max int) (int64, error) {
	var need int64
	for i, d := range data {
		if len(d) > max {
			return 0, fmt.Errorf("append to lane %q: record %d of %d bytes: %w (max %d)", lane, i, len(d), ErrTooLarge, max)
		}
		need += int64(len(d)) + RecordOverhead(lane)
	}
	return need, nil
}

func (m *Memory) record(l *lane[[]byte], i int) Record {
	s := &l.idx.slots[i]
	return Record{Lane: l.opts.Name, Seq: s.seq, Time: time.Unix(0, s.at), Data: append([]byte(nil), s.p...)}
}

// Read returns the records consumer has yet to acknowledge. See [Buffer].
func (m *Memory) Read(consumer, lane string, max int) ([]Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, err := readLane(m.st, m.closed, lane, max)
	if err != nil {
		return nil, err
	}
	c, err := m.st.cursor(consumer, l)
	if err != nil {
		return nil, fmt.Errorf("read: %w", err)
	}
	m.st.expire(l, m.st.nowNanos())
	var out []Record
	m.st.unread(l, c, max, func(i int) { out = append(out, m.record(l, i)) })
	return out, nil
}

// ReadFrom returns records of lane from sequence number from on. See
// [Buffer].
func (m *Memory) ReadFrom(lane string, from uint64, max int) ([]Record, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, err := readLane(m.st, m.closed, lane, max)
	if err != nil {
		return nil, err
	}
	m.st.expire(l, m.st.nowNanos())
	var out []Record
	for i := l.idx.search(from); i < len(l.idx.slots) && len(out) < max; i++ {
		if l.idx.slots[i].size != 0 {
			out = append(out, m.record(l, i))
		}
	}
	return out, nil
}

// Ack acknowledges records for consumer. See [Buffer].
func (m *Memory) Ack(consumer, lane string, seqs ...uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return fmt.Errorf("ack lane %q: %w", lane, ErrClosed)
	}
	l, err := m.st.lane(lane)
	if err != nil {
		return fmt.Errorf("ack: %w", err)
	}
	if err := m.st.ack(consumer, l, seqs); err != nil {
		return fmt.Errorf("ack: %w", err)
	}
	return nil
}

// consumerOp runs a consumer change.
func (m *Memory) consumerOp(what, name string, fn func() error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return fmt.Errorf("%s consumer %q: %w", what, name, ErrClosed)
	}
	if err := fn(); err != nil {
		return fmt.Errorf("%s consumer %q: %w", what, name, err)
	}
	return nil
}

// RegisterConsumer registers consumer name on lanes. See [Buffer].
func (m *Memory) RegisterConsumer(name string, lanes ...string) error {
	if err := checkConsumerName(name); err != nil {
		return err
	}
	return m.consumerOp("register", name, func() error { return m.st.register(name, lanes) })
}

// ResetConsumer moves consumer name back to the oldest record of lane.
func (m *Memory) ResetConsumer(name, lane string) error {
	return m.consumerOp("reset", name, func() error { return m.st.reset(name, lane) })
}

// RemoveConsumer unregisters consumer name from every lane.
func (m *Memory) RemoveConsumer(name string) error {
	return m.consumerOp("remove", name, func() error { return m.st.removeConsumer(name) })
}

// Stats returns the buffer's counters; DiskBytes is always 0.
func (m *Memory) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.st.stats()
}

// Close releases the records. It is idempotent.
func (m *Memory) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	for _, l := range m.st.lanes {
		l.signal()
	}
	return nil
}
