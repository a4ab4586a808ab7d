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
