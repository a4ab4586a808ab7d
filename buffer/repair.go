package buffer

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"github.com/dgraph-io/badger/v4/pb"
	"github.com/dgraph-io/badger/v4/table"
	"github.com/dgraph-io/badger/v4/y"
	"github.com/dgraph-io/ristretto/v2/z"
	"google.golang.org/protobuf/proto"
)

// Damage.
//
// A buffer directory can be damaged by a power loss, a failing SD card or a
// hand. Opening it never panics and never silently starts afresh:
//
//  1. Before Badger sees the directory, the buffer checks what Badger would
//     act on without a word: a missing MANIFEST beside data files (Badger
//     would start an empty database and delete the tables), a MANIFEST
//     that is torn or fails its checksums, or that names tables that are
//     gone (Badger would refuse to open, or truncate the MANIFEST and delete
//     the tables it no longer names), and tables that fail their checksums
//     (Badger panics on some). The damaged files are moved to
//     <dir>.damaged-<time>, and a MANIFEST is rebuilt from the tables that
//     are whole, keeping their levels where the old MANIFEST still tells
//     them.
//  2. Badger is opened, with any panic turned into an error. Damaged
//     records are skipped, counted and logged as before; damaged
//     bookkeeping (format key, lane state, cursor) is repaired, and
//     records the watermark file (synced.go) says were made durable but are
//     gone are counted as lost.
//  3. If Badger still cannot open the directory, it is moved aside whole to
//     <dir>.damaged-<time> and an empty buffer starts in its place; the log
//     says so, with the path, at level ERROR.
//
// Everything found and done is logged and listed in [Stats.Damage].

// openRepairing opens the buffer, repairing or moving aside a damaged
// directory.
func openRepairing(opts BadgerOptions, log *slog.Logger) (*Badger, error) {
	dir := opts.Dir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("open buffer %s: %w", dir, err)
	}
	var notes []string
	err := withDirLock(dir, func() error {
		var err error
		notes, err = checkStore(dir, log, false)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open buffer %s: %w", dir, err)
	}
	b, err := openOnce(opts, log, notes)
	if err == nil || !isDamage(err) {
		return b, err
	}
	log.Error("buffer: cannot open the buffer, trying to repair it", "err", err)
	notes = append(notes, fmt.Sprintf("open failed: %v", err))
	var more []string
	rerr := withDirLock(dir, func() error {
		var err error
		more, err = checkStore(dir, log, true)
		return err
	})
	notes = append(notes, more...)
	if rerr == nil {
		b, err = openOnce(opts, log, notes)
		if err == nil || !isDamage(err) {
			return b, err
		}
	}
	aside := asideName(dir)
	if merr := os.Rename(dir, aside); merr != nil {
		return nil, fmt.Errorf("open buffer %s: %w (moving the damaged directory aside failed too: %v)", dir, err, merr)
	}
	log.Error("buffer: the buffer is damaged beyond repair; it was moved aside and an empty buffer starts in its place. Its records are not delivered; inspect or delete the moved directory",
		"moved_to", aside, "err", err)
	notes = append(notes, fmt.Sprintf("damaged beyond repair (%v): moved to %s, an empty buffer started", err, aside))
	return openOnce(opts, log, notes)
}

// isDamage tells whether an open error means a damaged directory, rather
// than a busy or full disk, a permission or a newer format.
func isDamage(err error) bool {
	switch {
	case errors.Is(err, ErrIncompatible), errors.Is(err, ErrNoSpace), isNoSpace(err),
		errors.Is(err, fs.ErrPermission), strings.Contains(err.Error(), "directory in use"),
		strings.Contains(err.Error(), "Cannot acquire directory lock"):
		return false
	}
	return true
}

func asideName(dir string) string {
	base := dir + ".damaged-" + time.Now().UTC().Format("20060102T150405Z")
	name := base
	for i := 2; ; i++ {
		if _, err := os.Lstat(name); errors.Is(err, fs.ErrNotExist) {
			return name
		}
		name = fmt.Sprintf("%s-%d", base, i)
	}
}

type tableInfo struct {
	id                uint64
	smallest, biggest []byte
}

// checkStore checks the MANIFEST and the tables of dir and repairs what
// Badger would otherwise act on silently or choke on (see the top of the
// file). With force, it verifies every block of every table and rebuilds
// the MANIFEST even if nothing looks wrong. It returns what it found and
// did.
func checkStore(dir string, log *slog.Logger, force bool) (notes []string, err error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var ids []uint64
	dataFiles := 0
	hasManifest := false
	for _, e := range ents {
		name := e.Name()
		switch {
		case name == badger.ManifestFilename:
			hasManifest = true
		case strings.HasSuffix(name, ".sst"):
			if id, ok := table.ParseFileID(name); ok {
				ids = append(ids, id)
				dataFiles++
			}
		case strings.HasSuffix(name, ".vlog"), strings.HasSuffix(name, ".mem"):
			if fi, err := e.Info(); err == nil && fi.Size() > 0 {
				dataFiles++
			}
		}
	}
	slices.Sort(ids)
	var aside string
	moveAside := func(name string) error {
		if aside == "" {
			aside = asideName(dir)
			if err := os.Mkdir(aside, 0o755); err != nil {
				return err
			}
		}
		return os.Rename(filepath.Join(dir, name), filepath.Join(aside, name))
	}
	rebuild := force
	// The MANIFEST.
	levels := map[uint64]int{}
	switch {
	case !hasManifest && dataFiles > 0:
		notes = append(notes, fmt.Sprintf("MANIFEST is missing beside %d data files: rebuilt from the tables", dataFiles))
		rebuild = true
	case hasManifest:
		mf, problem := readManifest(dir)
		for id, tm := range mf.Tables {
			levels[id] = int(tm.Level)
		}
		if problem == "" {
			var missing []uint64
			for id := range mf.Tables {
				if !slices.Contains(ids, id) {
					missing = append(missing, id)
				}
			}
			if len(missing) > 0 {
				slices.Sort(missing)
				problem = fmt.Sprintf("names tables %v that are missing; their records are lost", missing)
			}
		}
		if problem == "" {
			// Tables the MANIFEST does not name: the output of a
			// compaction a crash interrupted, or tables whose entries the
			// MANIFEST lost. Badger would delete them; they are kept (a
			// key's versions tell old data from new wherever it sits).
			var extra []uint64
			for _, id := range ids {
				if _, ok := mf.Tables[id]; !ok {
					extra = append(extra, id)
				}
			}
			if len(extra) > 0 {
				problem = fmt.Sprintf("does not name tables %v that are present", extra)
			}
		}
		if problem != "" {
			notes = append(notes, "MANIFEST "+problem+": rebuilt from the tables")
			rebuild = true
		}
	}
	// The tables.
	var good []tableInfo
	for _, id := range ids {
		name := table.IDToFilename(id)
		lo, hi, err := verifyTable(filepath.Join(dir, name), true)
		if err != nil {
			if merr := moveAside(name); merr != nil {
				return notes, fmt.Errorf("move damaged table %s aside: %w", name, merr)
			}
			notes = append(notes, fmt.Sprintf("table %s is damaged (%v): moved to %s; its records are lost", name, err, aside))
			rebuild = true
			continue
		}
		good = append(good, tableInfo{id: id, smallest: lo, biggest: hi})
	}
	if !rebuild {
		return notes, nil
	}
	if hasManifest {
		if err := moveAside(badger.ManifestFilename); err != nil {
			return notes, fmt.Errorf("move the damaged MANIFEST aside: %w", err)
		}
		notes = append(notes, fmt.Sprintf("the old MANIFEST was moved to %s", aside))
	}
	if err := writeManifest(dir, assignLevels(good, levels)); err != nil {
		return notes, fmt.Errorf("rebuild the MANIFEST: %w", err)
	}
	for _, n := range notes {
		log.Error("buffer: damaged storage repaired", "damage", n)
	}
	return notes, nil
}

// readManifest replays the MANIFEST of dir and returns what it holds and,
// if it is damaged, why.
func readManifest(dir string) (badger.Manifest, string) {
	f, err := os.Open(filepath.Join(dir, badger.ManifestFilename))
	if err != nil {
		return badger.Manifest{}, fmt.Sprintf("cannot be read (%v)", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return badger.Manifest{}, fmt.Sprintf("cannot be read (%v)", err)
	}
	var mf badger.Manifest
	var end int64
	func() {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("panic: %v", r)
			}
		}()
		mf, end, err = badger.ReplayManifestFile(f, 0, badger.DefaultOptions(dir).WithLogger(nil))
	}()
	if err != nil {
		return badger.Manifest{}, fmt.Sprintf("is damaged (%v)", err)
	}
	if end < fi.Size() {
		return mf, fmt.Sprintf("is torn or damaged at offset %d of %d (changes after it would be dropped)", end, fi.Size())
	}
	return mf, ""
}

// verifyTable opens a table on its own and, with full, verifies the
// checksums of its index and every block; a panic in Badger's table code is
// an error.
func verifyTable(path string, full bool) (smallest, biggest []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			msg, _, _ := strings.Cut(strings.TrimSpace(fmt.Sprint(r)), "\n")
			err = fmt.Errorf("unreadable: %s", msg)
		}
	}()
	mf, err := z.OpenMmapFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, nil, err
	}
	mode := options.NoVerification
	if full {
		mode = options.OnTableRead
	}
	t, err := table.OpenTable(mf, table.Options{ReadOnly: true, ChkMode: mode, Compression: options.None, BlockSize: 4 << 10})
	if err != nil {
		return nil, nil, err
	}
	defer t.Close(-1)
	if len(t.Smallest()) == 0 || len(t.Biggest()) == 0 {
		return nil, nil, errors.New("no keys")
	}
	return bytes.Clone(t.Smallest()), bytes.Clone(t.Biggest()), nil
}

// maxLevel is Badger's deepest level with its default MaxLevels.
const maxLevel = 6

// assignLevels puts each table at the level the old MANIFEST gave it, or
// else at the deepest level where its key range overlaps no other table's,
// or at level 0 (where tables may overlap). Badger tells versions of a key
// apart by their version, not their level, so any such placement reads the
// same data.
func assignLevels(tables []tableInfo, known map[uint64]int) map[uint64]int {
	out := map[uint64]int{}
	byLevel := map[int][]tableInfo{}
	overlaps := func(a, b tableInfo) bool {
		return y.CompareKeys(a.smallest, b.biggest) <= 0 && y.CompareKeys(b.smallest, a.biggest) <= 0
	}
	fits := func(t tableInfo, lv int) bool {
		return lv == 0 || !slices.ContainsFunc(byLevel[lv], func(o tableInfo) bool { return overlaps(t, o) })
	}
	var rest []tableInfo
	// Newest first: a torn MANIFEST may name a compaction's output but not
	// the removal of its inputs.
	for _, t := range slices.Backward(tables) {
		if lv, ok := known[t.id]; ok && fits(t, lv) {
			out[t.id] = lv
			byLevel[lv] = append(byLevel[lv], t)
		} else {
			rest = append(rest, t)
		}
	}
	for _, t := range rest {
		lv := 0
		for l := maxLevel; l >= 1; l-- {
			if fits(t, l) {
				lv = l
				break
			}
		}
		out[t.id] = lv
		byLevel[lv] = append(byLevel[lv], t)
	}
	return out
}

// writeManifest writes a MANIFEST naming tables at their levels, the way
// Badger writes a fresh one: magic, version, one change set.
func writeManifest(dir string, levels map[uint64]int) error {
	set := &pb.ManifestChangeSet{}
	ids := make([]uint64, 0, len(levels))
	for id := range levels {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		set.Changes = append(set.Changes, &pb.ManifestChange{
			Id: id, Op: pb.ManifestChange_CREATE, Level: uint32(levels[id]),
			EncryptionAlgo: pb.EncryptionAlgo_aes, Compression: uint32(options.None),
		})
	}
	body, err := proto.Marshal(set)
	if err != nil {
		return err
	}
	buf := []byte{'B', 'd', 'g', 'r', 0, 0, 0, manifestVersion}
	buf = append(buf, byte(len(body)>>24), byte(len(body)>>16), byte(len(body)>>8), byte(len(body)))
	crc := crc32.Checksum(body, castagnoli)
	buf = append(buf, byte(crc>>24), byte(crc>>16), byte(crc>>8), byte(crc))
	buf = append(buf, body...)
	tmp := filepath.Join(dir, badger.ManifestFilename+".vigil-rebuild")
	if err := os.WriteFile(tmp, buf, 0o644); err != nil {
		return err
	}
	if err := fsyncPath(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, badger.ManifestFilename)); err != nil {
		return err
	}
	return fsyncPath(dir)
}

// manifestVersion is Badger v4's MANIFEST format version.
const manifestVersion = 8
