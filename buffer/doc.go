// Package buffer is a durable, byte-capped log with named lanes and
// per-consumer cursors. It is where Vigil keeps every score, alert and piece
// of advice between the moment it is produced and the moment every consumer
// (MQTT publisher, forwarders) has acknowledged it.
//
// A buffer has a fixed set of lanes, declared in [Options.Lanes]. Each lane
// has
//
//   - its own sequence numbers, assigned by [Buffer.Append], starting at 1,
//     strictly increasing and never reused, not even after a restart or after
//     the records were deleted;
//   - a priority: when the total cap is reached, the oldest records of the
//     lowest-priority lane are evicted first (scores before alerts);
//   - a durability mode, [Sync] or [Batched], saying when Append returns;
//   - an optional byte cap, a policy for when it is full ([Evict] or
//     [Reject]) and an optional time to live.
//
// Consumers register on lanes and read with [Buffer.Read], which returns the
// records after the consumer's ack floor that it has not acknowledged yet.
// Acknowledgements may arrive out of order ([Buffer.Ack]); the buffer keeps an
// ack floor plus the set of acknowledged sequence numbers above it, as stream
// consumers do. A record is deleted once every consumer registered on its lane
// has acknowledged it; a lane without consumers keeps its records until the
// byte cap or the TTL removes them. Every removal that is not an
// acknowledgement is counted in [Stats] (Evicted, Expired, CorruptSkipped),
// and every refused append is counted (Rejected) and returned as an error:
// the buffer never drops data silently.
//
// # Full and damaged disks
//
// A full disk is a state, not a crash ([Badger] only; see space.go). The
// buffer reads the free space of its filesystem (statfs) and keeps a
// reserve for the storage engine's own files and compactions; when what the
// filesystem can hold is below the byte cap, that becomes the cap, so the
// lanes' policies (evict the lowest priority, or reject and count) act
// before the disk is full. Below the reserve, every change is refused with
// [ErrNoSpace], counted ([LaneStats.NoSpace]), logged (rate-limited) and
// shown in [Stats.Disk], and the buffer takes changes again by itself once
// space returns. Badger writes its memtable logs, value-log files and
// tables through memory-mapped files, and a mapped write that meets a full
// disk kills the process with SIGBUS; Badger v4.9.6 has no option to avoid
// the mappings. So the buffer preallocates the memtable logs (the current
// one, and the next before Badger creates it), refuses changes below the
// reserve, and holds part of the reserve as a ballast file it releases when
// another writer fills the disk. The remaining risk: another process taking
// the last free block at the very moment Badger writes a table.
// [OpenBadger] warns, and so does check-config ([CheckDisk]), when the byte
// cap exceeds what the filesystem can hold.
//
// Damage is reported, contained and repaired (see repair.go). Opening a
// damaged directory never panics and never silently starts afresh: a
// missing or damaged MANIFEST is rebuilt from the tables, damaged tables
// are moved to <dir>.damaged-<time> with the old MANIFEST, damaged
// bookkeeping is repaired, damaged records are skipped; if Badger still
// cannot open the directory, it is moved aside whole and an empty buffer
// starts, with an error in the log. A small file of the buffer's own,
// vigil.synced, records after each fsync the highest sequence number made
// durable per lane, so that records lost with a damaged or truncated
// write-ahead log are noticed. Every loss is logged and counted in
// [LaneStats.CorruptSkipped]; what was found is listed in [Stats.Damage].
//
// What a power loss can cost: on a [Sync] lane nothing whose Append
// returned, unless the storage itself breaks its promises (a device that
// acknowledges a flush it did not do, or damages written sectors): then
// the records lost are detected against vigil.synced and counted. On a
// [Batched] lane, the records appended during the last FlushInterval (plus
// one fsync), silently: they were never made durable, so the watermark does
// not cover them. Acknowledgements follow their lane's mode: a lost ack
// means a record is delivered again (at least once, never lost). A SIGKILL
// loses nothing in either mode.
//
// Two implementations satisfy [Buffer] and pass the same behavioural test
// suite: [Badger], a crash-safe log on disk over Badger v4 tuned for devices
// with little memory, and [Memory], for tests and devices without storage.
//
// A minimal use:
//
//	opts := buffer.DefaultBadgerOptions("/var/lib/vigil/buffer")
//	opts.Lanes = []buffer.LaneOptions{
//		{Name: "score", Priority: 0, Durability: buffer.Batched},
//		{Name: "alert", Priority: 20, Durability: buffer.Sync},
//	}
//	b, err := buffer.OpenBadger(opts)
//	if err != nil {
//		return err
//	}
//	defer b.Close()
//	if err := b.RegisterConsumer("mqtt", "score", "alert"); err != nil {
//		return err
//	}
//	seqs, err := b.Append(ctx, "alert", payload)
//	...
//	wake := b.Notify("alert")
//	recs, err := b.Read("mqtt", "alert", 100)
//	if len(recs) == 0 {
//		<-wake // or ctx.Done()
//	}
//	...
//	err = b.Ack("mqtt", "alert", recs[0].Seq)
package buffer
