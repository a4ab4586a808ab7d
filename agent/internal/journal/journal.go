// Package journal is a small append-only, fsynced record log for data that
// must survive a crash between being acknowledged and being processed: the
// HTTP events source writes accepted events to it before answering 202,
// and replays it on start.
//
// A journal is a directory of segments, seg-<unix nanoseconds>.journal,
// each a sequence of records framed as a 4-byte little-endian length, a
// 4-byte CRC-32C of the payload and the payload. Append writes its records
// and fsyncs before returning. A record is kept until its segment is
// rotated out: a new segment starts when the current one is Retention old,
// and only the newest two are kept, so a record stays between Retention and
// twice Retention. Open reads every record that survived, in order, and
// cuts a torn tail (a crash in the middle of a write) off the last segment.
package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/fsx"
)

// MaxRecord is the largest record accepted.
const MaxRecord = 16 << 20

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Journal is an open journal. Its methods are safe for concurrent use.
type Journal struct {
	dir       string
	retention time.Duration
	now       func() time.Time

	mu      sync.Mutex
	synced  *sync.Cond // signalled when a sync ends
	f       *os.File
	created time.Time
	size    int64  // bytes written to f
	durable int64  // bytes of f known to be on disk
	gen     uint64 // which file f is: rotation moves on
	syncing bool   // a writer is fsyncing f, the lock released
	err     error  // a failed fsync: the journal is unusable
}

// Open opens (creating it if needed) the journal in dir and returns it with
// every record it holds, oldest first. now is the clock (time.Now when nil).
func Open(dir string, retention time.Duration, now func() time.Time) (*Journal, [][]byte, error) {
	if retention <= 0 {
		return nil, nil, fmt.Errorf("open journal %s: retention must be positive, got %v", dir, retention)
	}
	if now == nil {
		now = time.Now
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("open journal %s: %w", dir, err)
	}
	segs, err := segments(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("open journal %s: %w", dir, err)
	}
	j := &Journal{dir: dir, retention: retention, now: now}
	j.synced = sync.NewCond(&j.mu)
	var recs [][]byte
	for i, s := range segs {
		got, valid, err := readSegment(filepath.Join(dir, s.name))
		if err != nil {
			return nil, nil, fmt.Errorf("open journal %s: %w", dir, err)
		}
		recs = append(recs, got...)
		if i == len(segs)-1 {
			// Append to the last segment, without its torn tail.
			f, err := os.OpenFile(filepath.Join(dir, s.name), os.O_RDWR, 0o600)
			if err != nil {
				return nil, nil, fmt.Errorf("open journal %s: %w", dir, err)
			}
			if err := f.Truncate(valid); err != nil {
				f.Close()
				return nil, nil, fmt.Errorf("open journal %s: cut torn tail: %w", dir, err)
			}
			if _, err := f.Seek(valid, io.SeekStart); err != nil {
				f.Close()
				return nil, nil, fmt.Errorf("open journal %s: %w", dir, err)
			}
			j.f, j.created, j.size, j.durable = f, s.created, valid, valid
		}
	}
	return j, recs, nil
}

type segment struct {
	name    string
	created time.Time
}

// segments lists the segments of dir, oldest first.
func segments(dir string) ([]segment, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []segment
	for _, e := range ents {
		n, ok := strings.CutPrefix(e.Name(), "seg-")
		if !ok || !strings.HasSuffix(n, ".journal") {
			continue
		}
		ns, err := strconv.ParseInt(strings.TrimSuffix(n, ".journal"), 10, 64)
		if err != nil {
			continue
		}
		out = append(out, segment{e.Name(), time.Unix(0, ns)})
	}
	sort.Slice(out, func(a, b int) bool { return out[a].created.Before(out[b].created) })
	return out, nil
}

// readSegment returns the records of a segment and the length of its valid
// prefix: reading stops at the first record that is cut short or fails its
// checksum.
func readSegment(path string) (recs [][]byte, valid int64, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, err
	}
	off := 0
	for len(b)-off >= 8 {
		n := int(binary.LittleEndian.Uint32(b[off:]))
		sum := binary.LittleEndian.Uint32(b[off+4:])
		if n > MaxRecord || len(b)-off-8 < n {
			break
		}
		p := b[off+8 : off+8+n]
		if crc32.Checksum(p, castagnoli) != sum {
			break
		}
		recs = append(recs, p)
		off += 8 + n
	}
	return recs, int64(off), nil
}

// Append writes records and fsyncs them: when it returns nil they survive
// a crash. Appends that arrive while another one fsyncs share the next
// fsync (group commit), so concurrent requests do not queue for one fsync
// each. After a failed fsync every Append fails: what the kernel did with
// the data is not known, and a retried fsync may report success for data
// it dropped.
func (j *Journal) Append(recs ...[]byte) error {
	var buf []byte
	for _, r := range recs {
		if len(r) > MaxRecord {
			return fmt.Errorf("journal append: a record of %d bytes exceeds %d", len(r), MaxRecord)
		}
		buf = binary.LittleEndian.AppendUint32(buf, uint32(len(r)))
		buf = binary.LittleEndian.AppendUint32(buf, crc32.Checksum(r, castagnoli))
		buf = append(buf, r...)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.err != nil {
		return j.err
	}
	if err := j.rotate(); err != nil {
		return fmt.Errorf("journal append: %w", err)
	}
	if _, err := j.f.Write(buf); err != nil {
		// Leave no partial record behind the valid ones.
		_ = j.f.Truncate(j.size)
		_, _ = j.f.Seek(j.size, io.SeekStart)
		return fmt.Errorf("journal append: %w", err)
	}
	j.size += int64(len(buf))
	end, gen := j.size, j.gen
	for {
		switch {
		case j.err != nil:
			return j.err
		case j.gen != gen || j.durable >= end:
			return nil // synced by another writer, or by the rotation
		case !j.syncing:
			j.syncing = true
			f, target := j.f, j.size
			j.mu.Unlock()
			err := f.Sync()
			j.mu.Lock()
			j.syncing = false
			if err != nil {
				j.err = fmt.Errorf("journal append: fsync: %w", err)
			} else {
				j.durable = max(j.durable, target)
			}
			j.synced.Broadcast()
		default:
			j.synced.Wait()
		}
	}
}

// rotate starts a new segment when there is none or the current one is
// Retention old, and removes all but the newest two. j.mu is held.
func (j *Journal) rotate() error {
	now := j.now()
	if j.f != nil && now.Sub(j.created) < j.retention {
		return nil
	}
	// The current file is closed below: no fsync may be running on it, and
	// what was written to it must be on disk first (its writers may still
	// be waiting for that).
	for j.syncing {
		j.synced.Wait()
	}
	if j.err != nil {
		return j.err
	}
	if j.f != nil && now.Sub(j.created) < j.retention {
		return nil // another writer rotated while this one waited
	}
	if j.f != nil && j.durable < j.size {
		if err := j.f.Sync(); err != nil {
			j.err = fmt.Errorf("fsync: %w", err)
			j.synced.Broadcast()
			return j.err
		}
		j.durable = j.size
	}
	created := now
	if !created.After(j.created) {
		created = j.created.Add(1)
	}
	f, err := os.OpenFile(filepath.Join(j.dir, fmt.Sprintf("seg-%d.journal", created.UnixNano())), os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if err := fsx.SyncDir(j.dir); err != nil {
		f.Close()
		return err
	}
	if j.f != nil {
		j.f.Close()
	}
	j.f, j.created, j.size, j.durable = f, created, 0, 0
	j.gen++
	j.synced.Broadcast()
	segs, err := segments(j.dir)
	if err != nil {
		return err
	}
	var errs []error
	for i := 0; i < len(segs)-2; i++ {
		if err := os.Remove(filepath.Join(j.dir, segs[i].name)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Close closes the journal; its records stay on disk.
func (j *Journal) Close() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	for j.syncing {
		j.synced.Wait()
	}
	if j.f == nil {
		return nil
	}
	err := j.f.Close()
	j.f = nil
	return err
}
