package buffer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Buffer is what both implementations, [*Badger] and [*Memory], offer.
// Code that uses a buffer should declare the few methods it needs in its own
// small interface; this one exists so that both implementations are checked
// against the same contract and share one test suite.
type Buffer interface {
	// Append stores data as new records of lane and returns their sequence
	// numbers, in order, once they are as durable as the lane's [Durability]
	// promises. It is all or nothing: on error no record of the call has been
	// assigned a sequence number, except when ctx ends while Append waits for
	// durability (see the implementations).
	Append(ctx context.Context, lane string, data ...[]byte) ([]uint64, error)
	// Read returns up to max records of lane, in sequence order, whose
	// sequence number is above the consumer's ack floor and which the
	// consumer has not acknowledged. Read does not mark records in flight:
	// calling it twice without an Ack returns the same records.
	Read(consumer, lane string, max int) ([]Record, error)
	// ReadFrom returns up to max records of lane with a sequence number of at
	// least from, in sequence order, skipping deleted and evicted ones. It
	// ignores consumers; it serves replays ("live first, backlog behind").
	ReadFrom(lane string, from uint64, max int) ([]Record, error)
	// Ack acknowledges records of lane for consumer, in any order. Records
	// acknowledged by every consumer of their lane are deleted. Acking a
	// sequence number at or below the floor, or twice, is a no-op.
	Ack(consumer, lane string, seqs ...uint64) error
	// LastSeq returns the highest sequence number of lane whose record has
	// been stored and can be read (for a Sync lane, possibly a moment before
	// its fsync ends), or 0 if there is none or the lane is unknown. It never
	// goes back, not even across restarts.
	LastSeq(lane string) uint64
	// Notify returns a channel that is closed when records are next appended
	// to lane. Take the channel before calling Read; if Read returns nothing,
	// wait on it: no append can slip in between unnoticed. For an unknown
	// lane or a closed buffer the channel is already closed, so a waiting
	// consumer wakes up and sees the error from Read.
	Notify(lane string) <-chan struct{}
	// RegisterConsumer registers consumer name on lanes (on every lane when
	// none is given). It is idempotent: a lane the consumer already has keeps
	// its cursor; on a new lane the consumer starts at the oldest retained
	// record.
	RegisterConsumer(name string, lanes ...string) error
	// ResetConsumer moves consumer name back to the oldest retained record of
	// lane and forgets its acknowledgements above that point.
	ResetConsumer(name, lane string) error
	// RemoveConsumer unregisters consumer name from every lane. Records that
	// the remaining consumers of a lane have all acknowledged are deleted; a
	// lane left without consumers keeps its records.
	RemoveConsumer(name string) error
	// Stats returns counters for every lane and consumer.
	Stats() Stats
	// Close stops the buffer after making pending appends and acks durable.
	// It is idempotent; later calls return nil.
	Close() error
}

var (
	_ Buffer = (*Badger)(nil)
	_ Buffer = (*Memory)(nil)
)

// Durability says when Append returns, relative to the records reaching
// stable storage.
type Durability int

const (
	// Sync makes Append return only after the records have been written and
	// fsynced. Concurrent appends share one fsync (group commit). It is the
	// zero value, so a lane is durable unless it asks otherwise.
	Sync Durability = iota
	// Batched makes Append return once the records are written to the
	// storage engine's log: they survive a crash of the process at once, and
	// they are fsynced within [Options.FlushInterval]. A power loss or kernel
	// crash may lose the records appended during the last FlushInterval (plus
	// the duration of one fsync).
	Batched
)

// String returns "sync" or "batched".
func (d Durability) String() string {
	switch d {
	case Sync:
		return "sync"
	case Batched:
		return "batched"
	default:
		return fmt.Sprintf("Durability(%d)", int(d))
	}
}

// FullPolicy says what happens when an append does not fit a cap.
type FullPolicy int

const (
	// Evict makes room by evicting the oldest records: first from the lane's
	// own cap, then, for the total cap, from the lowest-priority lanes whose
	// policy is Evict and whose priority is not above the appending lane's.
	// Each evicted record is counted in [LaneStats.Evicted]. It is the zero
	// value.
	Evict FullPolicy = iota
	// Reject keeps the lane's records: an append that does not fit fails
	// with [ErrFull] (after evicting lower-priority Evict lanes for the total
	// cap) and is counted in [LaneStats.Rejected]. Records of a Reject lane
	// are never evicted by other lanes either.
	Reject
)

// String returns "evict" or "reject".
func (p FullPolicy) String() string {
	switch p {
	case Evict:
		return "evict"
	case Reject:
		return "reject"
	default:
		return fmt.Sprintf("FullPolicy(%d)", int(p))
	}
}

// LaneOptions configures one lane.
type LaneOptions struct {
	// Name identifies the lane: 1 to 64 characters out of A-Z a-z 0-9 . _ -
	Name string
	// Priority orders lanes for eviction under the total cap: the lowest
	// priority is evicted first, and a lane never evicts records of a lane
	// with a higher priority.
	Priority int
	// Durability says when Append returns (and when Ack returns).
	Durability Durability
	// MaxBytes caps the lane's stored bytes; 0 means only the total cap
	// applies.
	MaxBytes int64
	// OnFull says what happens when an append does not fit.
	OnFull FullPolicy
	// TTL deletes records older than this, counting them in
	// [LaneStats.Expired]; 0 keeps records regardless of age.
	TTL time.Duration
}

// Options configures any buffer. Start from [DefaultOptions].
type Options struct {
	// Lanes are the lanes of the buffer; at least one is required.
	Lanes []LaneOptions
	// MaxBytes caps the stored bytes of all lanes together. Stored bytes
	// count each record's data plus a fixed overhead for its key and header
	// (see [RecordOverhead]).
	MaxBytes int64
	// MaxRecordBytes is the largest data a single record may hold; larger
	// appends fail with [ErrTooLarge].
	MaxRecordBytes int
	// FlushInterval bounds how long appends to a [Batched] lane may stay
	// without fsync.
	FlushInterval time.Duration
	// ExpireInterval is how often lanes with a TTL are swept when the buffer
	// is otherwise idle; expired records are never returned in any case.
	ExpireInterval time.Duration
	// Now is the clock, for append times, ages and TTLs; nil means time.Now.
	Now func() time.Time
	// Logger receives warnings (corrupt records, storage engine warnings);
	// nil discards them.
	Logger *slog.Logger
}

// Defaults used by [DefaultOptions].
const (
	DefaultMaxBytes       = 256 << 20
	DefaultMaxRecordBytes = 1 << 20
	DefaultFlushInterval  = 200 * time.Millisecond
	DefaultExpireInterval = time.Second
)

// DefaultOptions returns options with a 256 MiB total cap, 1 MiB records, a
// 200 ms flush interval and no lanes: set Options.Lanes.
func DefaultOptions() Options {
	return Options{
		MaxBytes:       DefaultMaxBytes,
		MaxRecordBytes: DefaultMaxRecordBytes,
		FlushInterval:  DefaultFlushInterval,
		ExpireInterval: DefaultExpireInterval,
	}
}

const maxNameLen = 64

// checkConsumerName says what is wrong with a consumer's name, if anything.
func checkConsumerName(name string) error {
	if !validName(name) {
		return fmt.Errorf("register consumer %q: name must be 1 to %d characters out of A-Z a-z 0-9 . _ -", name, maxNameLen)
	}
	return nil
}

func validName(s string) bool {
	if len(s) == 0 || len(s) > maxNameLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '.', c == '_', c == '-':
		default:
			return false
		}
	}
	return true
}

// validate checks o and returns all problems at once, each naming its field.
func (o *Options) validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("Options.%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if len(o.Lanes) == 0 {
		bad("Lanes", "at least one lane is required")
	}
	if o.MaxBytes <= 0 {
		bad("MaxBytes", "must be positive, got %d", o.MaxBytes)
	}
	if o.MaxRecordBytes <= 0 {
		bad("MaxRecordBytes", "must be positive, got %d", o.MaxRecordBytes)
	} else if o.MaxRecordBytes > maxRecordBytesLimit {
		bad("MaxRecordBytes", "must be at most %d, got %d", maxRecordBytesLimit, o.MaxRecordBytes)
	}
	if o.FlushInterval <= 0 {
		bad("FlushInterval", "must be positive, got %v", o.FlushInterval)
	}
	if o.ExpireInterval <= 0 {
		bad("ExpireInterval", "must be positive, got %v", o.ExpireInterval)
	}
	seen := map[string]bool{}
	for i, l := range o.Lanes {
		f := fmt.Sprintf("Lanes[%d]", i)
		switch {
		case !validName(l.Name):
			bad(f+".Name", "%q must be 1 to %d characters out of A-Z a-z 0-9 . _ -", l.Name, maxNameLen)
		case seen[l.Name]:
			bad(f+".Name", "duplicate lane %q", l.Name)
		}
		seen[l.Name] = true
		if l.Durability != Sync && l.Durability != Batched {
			bad(f+".Durability", "unknown durability %d", int(l.Durability))
		}
		if l.OnFull != Evict && l.OnFull != Reject {
			bad(f+".OnFull", "unknown policy %d", int(l.OnFull))
		}
		if l.MaxBytes < 0 {
			bad(f+".MaxBytes", "must not be negative, got %d", l.MaxBytes)
		}
		if l.TTL < 0 {
			bad(f+".TTL", "must not be negative, got %v", l.TTL)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("buffer: invalid options: %w", errors.Join(errs...))
	}
	return nil
}

// Record is one entry of a lane.
type Record struct {
	// Lane is the lane the record belongs to.
	Lane string
	// Seq is the record's sequence number within its lane.
	Seq uint64
	// Time is when the record was appended (by [Options.Now]).
	Time time.Time
	// Data is the payload; it belongs to the caller.
	Data []byte
}

// Errors a caller may want to tell apart; they are wrapped with context, so
// compare with errors.Is.
var (
	// ErrFull: the append does not fit the lane's or the total cap and the
	// lane's policy, or the priorities, forbid making room.
	ErrFull = errors.New("buffer full")
	// ErrTooLarge: a record exceeds Options.MaxRecordBytes, or an append can
	// never fit its caps.
	ErrTooLarge = errors.New("record too large")
	// ErrClosed: the buffer has been closed.
	ErrClosed = errors.New("buffer closed")
	// ErrUnknownLane: no lane of that name is configured.
	ErrUnknownLane = errors.New("unknown lane")
	// ErrUnknownConsumer: no consumer of that name is registered on the lane.
	ErrUnknownConsumer = errors.New("unknown consumer")
	// ErrIncompatible: the directory was written by an incompatible version
	// of this package. Nothing has been changed on disk.
	ErrIncompatible = errors.New("incompatible buffer format")
	// ErrCorrupt: the storage engine could not read the directory (it
	// panicked or failed on damaged files). [OpenBadger] does not return it:
	// it repairs the directory or moves it aside (see the package
	// documentation); it may appear wrapped in the reason logged for that.
	ErrCorrupt = errors.New("damaged buffer state")
	// ErrNoSpace: the buffer's filesystem has less free space than the
	// buffer keeps in reserve for its storage engine ([Badger] only). The
	// change was refused and counted ([LaneStats.NoSpace]); the buffer
	// takes changes again by itself once space returns.
	ErrNoSpace = errors.New("no space left on the buffer's filesystem")
)

// Stats is a snapshot of a buffer's counters.
type Stats struct {
	// Lanes holds per-lane counters, by lane name.
	Lanes map[string]LaneStats
	// Consumers holds per-consumer, per-lane cursors: Consumers[name][lane].
	Consumers map[string]map[string]ConsumerStats
	// Bytes is the stored bytes of all lanes, as counted against
	// Options.MaxBytes.
	Bytes int64
	// DiskBytes is the space the buffer's files take on disk (allocated
	// blocks of the LSM tree, logs and value log, including the two
	// preallocated memtable logs; not the disk ballast, which is part of
	// Disk.Reserve); 0 for [Memory].
	DiskBytes int64
	// Disk is the state of the buffer's filesystem; zero for [Memory].
	Disk DiskStats
	// Damage describes the damage found, and what was done about it, when
	// the buffer was opened; empty if there was none.
	Damage []string
}

// DiskStats is the state of the filesystem that holds a [Badger] buffer.
type DiskStats struct {
	// Free is the space available on the filesystem at the last check.
	Free int64
	// Reserve is the free space the buffer keeps for its storage engine's
	// files and compactions: below it, changes are refused with
	// [ErrNoSpace].
	Reserve int64
	// Limit is the stored bytes the filesystem can hold, when that is
	// below Options.MaxBytes (0 otherwise): it acts as the total cap.
	Limit int64
	// Pressure is true while the stored bytes are within 10% of Limit:
	// appends evict or are rejected by the lanes' policies.
	Pressure bool
	// Full is true while free space is below the reserve: changes are
	// refused with [ErrNoSpace] until space returns.
	Full bool
	// LastError is the last storage error caused by a full disk, if any.
	LastError string
}

// LaneStats are the counters of one lane.
type LaneStats struct {
	// Records is the number of records stored.
	Records int
	// Bytes is their stored size, as counted against the caps.
	Bytes int64
	// OldestAge is the age of the oldest record, 0 if there is none.
	OldestAge time.Duration
	// LastSeq is the highest sequence number stored, as Buffer.LastSeq.
	LastSeq uint64
	// Evicted counts records removed to make room under a cap.
	Evicted uint64
	// Expired counts records removed because they outlived the lane's TTL.
	Expired uint64
	// Rejected counts records refused with ErrFull.
	Rejected uint64
	// CorruptSkipped counts records found damaged (checksum, torn write) and
	// skipped, and records found lost at open: records the buffer had
	// fsynced (its watermark file says so) that the storage engine no
	// longer has. They are never returned as data.
	CorruptSkipped uint64
	// NoSpace counts records refused with [ErrNoSpace].
	NoSpace uint64
}

// ConsumerStats are the cursor of one consumer on one lane.
type ConsumerStats struct {
	// AckFloor is the highest sequence number at or below which the consumer
	// has acknowledged, or skipped over, everything.
	AckFloor uint64
	// Pending is the number of acknowledgements held above the floor.
	Pending int
	// Lag is the number of stored records the consumer has not acknowledged.
	Lag int
}
