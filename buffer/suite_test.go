package buffer

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// opener opens an empty buffer with opts; the buffer is closed when the
// test ends.
type opener func(t *testing.T, opts Options) Buffer

func TestMemory(t *testing.T) {
	runSuite(t, func(t *testing.T, opts Options) Buffer {
		m, err := NewMemory(opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { m.Close() })
		return m
	})
}

func TestBadger(t *testing.T) {
	runSuite(t, func(t *testing.T, opts Options) Buffer {
		bo := DefaultBadgerOptions(t.TempDir())
		bo.Options = opts
		b, err := OpenBadger(bo)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if err := b.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return b
	})
}

// runSuite is the behaviour every Buffer implementation must have.
func runSuite(t *testing.T, open opener) {
	ctx := context.Background()

	t.Run("AppendAssignsSequenceNumbersInOrder", func(t *testing.T) {
		clock := newFakeClock()
		b := open(t, testOptions(t, clock))
		if got := b.LastSeq("score"); got != 0 {
			t.Fatalf("LastSeq of an empty lane = %d, want 0", got)
		}
		if got := mustAppend(t, b, "score", []byte("a")); !slices.Equal(got, []uint64{1}) {
			t.Fatalf("first Append = %v, want [1]", got)
		}
		clock.Advance(time.Second)
		if got := mustAppend(t, b, "score", []byte("b"), []byte("c")); !slices.Equal(got, []uint64{2, 3}) {
			t.Fatalf("second Append = %v, want [2 3]", got)
		}
		if got := mustAppend(t, b, "alert", []byte("x")); !slices.Equal(got, []uint64{1}) {
			t.Fatalf("lanes must number independently: alert Append = %v, want [1]", got)
		}
		if got := b.LastSeq("score"); got != 3 {
			t.Fatalf("LastSeq = %d, want 3", got)
		}
		recs, err := b.ReadFrom("score", 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := dataOf(recs), []string{"a", "b", "c"}; !slices.Equal(got, want) {
			t.Fatalf("ReadFrom data = %q, want %q", got, want)
		}
		t0 := newFakeClock().Now()
		for i, r := range recs {
			want := t0
			if i > 0 {
				want = t0.Add(time.Second)
			}
			if r.Lane != "score" || r.Seq != uint64(i+1) || !r.Time.Equal(want) {
				t.Errorf("record %d = {%s %d %v}, want {score %d %v}", i, r.Lane, r.Seq, r.Time, i+1, want)
			}
		}
		if seqs, err := b.Append(ctx, "score"); err != nil || seqs != nil {
			t.Fatalf("empty Append = %v, %v; want nil, nil", seqs, err)
		}
	})

	t.Run("ReturnedDataBelongsToTheCaller", func(t *testing.T) {
		b := open(t, testOptions(t, nil))
		d := []byte("original")
		mustAppend(t, b, "score", d)
		copy(d, "XXXXXXXX")
		recs, _ := b.ReadFrom("score", 1, 1)
		recs[0].Data[0] = 'Y'
		recs, _ = b.ReadFrom("score", 1, 1)
		if string(recs[0].Data) != "original" {
			t.Fatalf("stored data changed to %q through caller slices", recs[0].Data)
		}
	})

	t.Run("SequenceNumbersAreNeverReused", func(t *testing.T) {
		b := open(t, testOptions(t, nil))
		mustRegister(t, b, "c", "score")
		seqs := mustAppend(t, b, "score", payloads("p", 5)...)
		mustAck(t, b, "c", "score", seqs...)
		if st := b.Stats().Lanes["score"]; st.Records != 0 {
			t.Fatalf("records acknowledged by the only consumer must be deleted, %d left", st.Records)
		}
		if got := mustAppend(t, b, "score", []byte("next")); got[0] != 6 {
			t.Fatalf("Append after deleting everything = %v, want [6]", got)
		}
	})

	t.Run("ReadReturnsUnackedRecordsWithoutMarkingThem", func(t *testing.T) {
		b := open(t, testOptions(t, nil))
		mustRegister(t, b, "c", "score")
		mustAppend(t, b, "score", payloads("p", 5)...)
		first := mustRead(t, b, "c", "score", 3)
		if got := seqsOf(first); !slices.Equal(got, []uint64{1, 2, 3}) {
			t.Fatalf("Read = %v, want [1 2 3]", got)
		}
		if got := seqsOf(mustRead(t, b, "c", "score", 3)); !slices.Equal(got, []uint64{1, 2, 3}) {
			t.Fatalf("second Read without Ack = %v, want the same records", got)
		}
		if got := dataOf(first); !slices.Equal(got, []string{"p-0", "p-1", "p-2"}) {
			t.Fatalf("Read data = %q", got)
		}
	})

	t.Run("OutOfOrderAcks", func(t *testing.T) {
		b := open(t, testOptions(t, nil))
		mustRegister(t, b, "c", "score")
		mustAppend(t, b, "score", payloads("p", 6)...)
		mustAck(t, b, "c", "score", 3, 1, 5)
		if got := seqsOf(mustRead(t, b, "c", "score", 10)); !slices.Equal(got, []uint64{2, 4, 6}) {
			t.Fatalf("Read after acking 3, 1, 5 = %v, want [2 4 6]", got)
		}
		cs := b.Stats().Consumers["c"]["score"]
		if cs.AckFloor != 1 || cs.Pending != 2 || cs.Lag != 3 {
			t.Fatalf("cursor = %+v, want floor 1, 2 pending, lag 3", cs)
		}
		mustAck(t, b, "c", "score", 2)
		cs = b.Stats().Consumers["c"]["score"]
		if cs.AckFloor != 3 || cs.Pending != 1 || cs.Lag != 2 {
			t.Fatalf("cursor after acking 2 = %+v, want floor 3, 1 pending, lag 2", cs)
		}
		mustAck(t, b, "c", "score", 2, 3, 5) // repeated acks are no-ops
		mustAck(t, b, "c", "score", 6, 4)
		cs = b.Stats().Consumers["c"]["score"]
		if cs.AckFloor != 6 || cs.Pending != 0 || cs.Lag != 0 {
			t.Fatalf("cursor after acking all = %+v, want floor 6, nothing pending", cs)
		}
		if n := b.Stats().Lanes["score"].Records; n != 0 {
			t.Fatalf("%d records left after the only consumer acked all", n)
		}
	})

	t.Run("AckRejectsUnassignedSequenceNumbers", func(t *testing.T) {
		b := open(t, testOptions(t, nil))
		mustRegister(t, b, "c", "score")
		mustAppend(t, b, "score", []byte("a"))
		for _, seq := range []uint64{0, 2} {
			if err := b.Ack("c", "score", seq); err == nil {
				t.Errorf("Ack(%d) with last seq 1 succeeded", seq)
			}
		}
		if err := b.Ack("nobody", "score", 1); !errors.Is(err, ErrUnknownConsumer) {
			t.Errorf("Ack by unknown consumer: %v, want ErrUnknownConsumer", err)
		}
		if err := b.Ack("c", "alert", 1); !errors.Is(err, ErrUnknownConsumer) {
			t.Errorf("Ack on a lane the consumer is not on: %v, want ErrUnknownConsumer", err)
		}
	})

	t.Run("RecordsStayUntilEveryConsumerAcks", func(t *testing.T) {
		b := open(t, testOptions(t, nil))
		mustRegister(t, b, "mqtt", "alert")
		mustRegister(t, b, "http", "alert")
		mustAppend(t, b, "alert", payloads("a", 4)...)
		mustAck(t, b, "mqtt", "alert", 1, 2, 3, 4)
		if n := b.Stats().Lanes["alert"].Records; n != 4 {
			t.Fatalf("records = %d after one of two consumers acked, want 4", n)
		}
		if got := seqsOf(mustRead(t, b, "http", "alert", 10)); !slices.Equal(got, []uint64{1, 2, 3, 4}) {
			t.Fatalf("second consumer reads %v, want all", got)
		}
		mustAck(t, b, "http", "alert", 4, 2)
		st := b.Stats().Lanes["alert"]
		if st.Records != 2 {
			t.Fatalf("records = %d after both acked 2 and 4, want 2", st.Records)
		}
		recs, _ := b.ReadFrom("alert", 1, 10)
		if got := seqsOf(recs); !slices.Equal(got, []uint64{1, 3}) {
			t.Fatalf("ReadFrom after deleting 2 and 4 = %v, want [1 3]", got)
		}
	})

	t.Run("LaneWithoutConsumersKeepsRecords", func(t *testing.T) {
		b := open(t, testOptions(t, nil))
		mustRegister(t, b, "c", "score")
		mustAppend(t, b, "alert", payloads("a", 3)...)
		if n := b.Stats().Lanes["alert"].Records; n != 3 {
			t.Fatalf("records = %d, want 3", n)
		}
	})

	t.Run("RegisterIsIdempotentAndStartsAtOldestRetained", func(t *testing.T) {
		b := open(t, testOptions(t, nil))
		mustRegister(t, b, "a", "score")
		mustAppend(t, b, "score", payloads("p", 4)...)
		mustAck(t, b, "a", "score", 1, 2)
		mustRegister(t, b, "a", "score") // no reset
		if got := seqsOf(mustRead(t, b, "a", "score", 10)); !slices.Equal(got, []uint64{3, 4}) {
			t.Fatalf("Read after re-registering = %v, want [3 4]", got)
		}
		mustRegister(t, b, "b", "score")
		if got := seqsOf(mustRead(t, b, "b", "score", 10)); !slices.Equal(got, []uint64{3, 4}) {
			t.Fatalf("new consumer reads %v, want the retained [3 4]", got)
		}
		mustRegister(t, b, "all")
		st := b.Stats().Consumers["all"]
		if _, ok := st["score"]; !ok {
			t.Fatalf("RegisterConsumer without lanes must register on all lanes, got %v", st)
		}
		if _, ok := st["alert"]; !ok {
			t.Fatalf("RegisterConsumer without lanes must register on all lanes, got %v", st)
		}
		if err := b.RegisterConsumer("x", "nope"); !errors.Is(err, ErrUnknownLane) {
			t.Fatalf("register on unknown lane: %v, want ErrUnknownLane", err)
		}
		if err := b.RegisterConsumer("bad/name", "score"); err == nil {
			t.Fatal("register with a bad name succeeded")
		}
	})

	t.Run("ResetConsumer", func(t *testing.T) {
		b := open(t, testOptions(t, nil))
		mustRegister(t, b, "a", "score")
		mustRegister(t, b, "b", "score")
		mustAppend(t, b, "score", payloads("p", 3)...)
		mustAck(t, b, "a", "score", 1, 2, 3)
		mustAck(t, b, "b", "score", 1)
		if err := b.ResetConsumer("a", "score"); err != nil {
			t.Fatal(err)
		}
		if got := seqsOf(mustRead(t, b, "a", "score", 10)); !slices.Equal(got, []uint64{2, 3}) {
			t.Fatalf("Read after reset = %v, want the retained [2 3]", got)
		}
		if err := b.ResetConsumer("nobody", "score"); !errors.Is(err, ErrUnknownConsumer) {
			t.Fatalf("reset unknown consumer: %v", err)
		}
		if err := b.ResetConsumer("a", "nope"); !errors.Is(err, ErrUnknownLane) {
			t.Fatalf("reset on unknown lane: %v", err)
		}
	})

	t.Run("RemoveConsumerReleasesRecords", func(t *testing.T) {
		b := open(t, testOptions(t, nil))
		mustRegister(t, b, "a", "score")
		mustRegister(t, b, "b", "score")
		mustAppend(t, b, "score", payloads("p", 4)...)
		mustAck(t, b, "a", "score", 1, 2, 4)
		if err := b.RemoveConsumer("b"); err != nil {
			t.Fatal(err)
		}
		recs, _ := b.ReadFrom("score", 0, 10)
		if got := seqsOf(recs); !slices.Equal(got, []uint64{3}) {
			t.Fatalf("after removing b, records %v remain, want [3]", got)
		}
		if _, err := b.Read("b", "score", 1); !errors.Is(err, ErrUnknownConsumer) {
			t.Fatalf("Read by removed consumer: %v, want ErrUnknownConsumer", err)
		}
		if err := b.RemoveConsumer("b"); !errors.Is(err, ErrUnknownConsumer) {
			t.Fatalf("removing twice: %v, want ErrUnknownConsumer", err)
		}
		if err := b.RemoveConsumer("a"); err != nil {
			t.Fatal(err)
		}
		if n := b.Stats().Lanes["score"].Records; n != 1 {
			t.Fatalf("a lane left without consumers must keep its records, has %d", n)
		}
	})

	t.Run("LaneCapEvictsOldest", func(t *testing.T) {
		o := testOptions(t, nil)
		rec := RecordOverhead("score") + 10
		o.Lanes[0].MaxBytes = 3 * rec
		b := open(t, o)
		mustRegister(t, b, "c", "score")
		for i := range 5 {
			mustAppend(t, b, "score", fmt.Appendf(nil, "record-%03d", i))
		}
		st := b.Stats()
		if ls := st.Lanes["score"]; ls.Records != 3 || ls.Evicted != 2 || ls.Bytes != 3*rec {
			t.Fatalf("lane stats = %+v, want 3 records, 2 evicted, %d bytes", ls, 3*rec)
		}
		if got := seqsOf(mustRead(t, b, "c", "score", 10)); !slices.Equal(got, []uint64{3, 4, 5}) {
			t.Fatalf("Read = %v, want the newest [3 4 5]", got)
		}
		if cs := st.Consumers["c"]["score"]; cs.Lag != 3 {
			t.Fatalf("lag = %d, want 3", cs.Lag)
		}
	})

	t.Run("LaneCapRejects", func(t *testing.T) {
		o := testOptions(t, nil)
		rec := RecordOverhead("alert") + 10
		o.Lanes[1].MaxBytes = 3 * rec
		o.Lanes[1].OnFull = Reject
		b := open(t, o)
		mustAppend(t, b, "alert", tenBytes("alert", 0, 3)...)
		_, err := b.Append(ctx, "alert", tenBytes("alert", 3, 1)...)
		if !errors.Is(err, ErrFull) {
			t.Fatalf("Append to a full reject lane: %v, want ErrFull", err)
		}
		if want := `"alert"`; !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not name the lane", err)
		}
		ls := b.Stats().Lanes["alert"]
		if ls.Records != 3 || ls.Rejected != 1 || ls.Evicted != 0 {
			t.Fatalf("lane stats = %+v, want 3 records, 1 rejected, 0 evicted", ls)
		}
		if b.LastSeq("alert") != 3 {
			t.Fatalf("a rejected append must not use a sequence number")
		}
	})

	t.Run("TotalCapEvictsLowestPriorityFirst", func(t *testing.T) {
		o := testOptions(t, nil)
		rs := RecordOverhead("score") + 10
		ra := RecordOverhead("alert") + 10
		o.MaxBytes = 4*rs + 2*ra
		b := open(t, o)
		for i := range 4 {
			mustAppend(t, b, "score", fmt.Appendf(nil, "score-%04d", i))
		}
		mustAppend(t, b, "alert", tenBytes("alert", 0, 2)...)
		// Full. Alerts evict scores, oldest first.
		mustAppend(t, b, "alert", []byte("alert-0002"), []byte("alert-0003"))
		st := b.Stats()
		if ls := st.Lanes["score"]; ls.Records != 2 || ls.Evicted != 2 {
			t.Fatalf("score = %+v, want 2 records, 2 evicted", ls)
		}
		if ls := st.Lanes["alert"]; ls.Records != 4 || ls.Evicted != 0 {
			t.Fatalf("alert = %+v, want 4 records, none evicted", ls)
		}
		recs, _ := b.ReadFrom("score", 0, 10)
		if got := seqsOf(recs); !slices.Equal(got, []uint64{3, 4}) {
			t.Fatalf("scores left = %v, want the newest [3 4]", got)
		}
		if st.Bytes > o.MaxBytes {
			t.Fatalf("stored %d bytes over the cap %d", st.Bytes, o.MaxBytes)
		}
		// A score evicts its own lane's oldest, never alerts.
		mustAppend(t, b, "score", []byte("score-0004"))
		if ls := b.Stats().Lanes["alert"]; ls.Records != 4 {
			t.Fatalf("a score append evicted alerts: %+v", ls)
		}
		// With scores gone, a score append cannot evict alerts: ErrFull.
		mustAppend(t, b, "alert", tenBytes("alert", 1000, 2)...)
		if ls := b.Stats().Lanes["score"]; ls.Records != 0 {
			t.Fatalf("scores left: %+v", ls)
		}
		if _, err := b.Append(ctx, "score", []byte("score-0005")); !errors.Is(err, ErrFull) {
			t.Fatalf("score append with only alerts stored: %v, want ErrFull", err)
		}
		if ls := b.Stats().Lanes["score"]; ls.Rejected != 1 {
			t.Fatalf("rejected = %d, want 1", ls.Rejected)
		}
		// Alerts evict their own oldest under the total cap.
		mustAppend(t, b, "alert", []byte("alert-2000"))
		if ls := b.Stats().Lanes["alert"]; ls.Evicted != 1 || ls.Records != 6 {
			t.Fatalf("alert = %+v, want 1 evicted, 6 records", ls)
		}
	})

	t.Run("RejectLaneIsNeverEvicted", func(t *testing.T) {
		o := testOptions(t, nil)
		o.Lanes = append(o.Lanes, LaneOptions{Name: "audit", Priority: 0, OnFull: Reject})
		r := RecordOverhead("audit") + 10
		o.MaxBytes = 2 * r
		b := open(t, o)
		mustAppend(t, b, "audit", tenBytes("audit", 0, 2)...)
		if _, err := b.Append(ctx, "alert", []byte("alert-0000")); !errors.Is(err, ErrFull) {
			t.Fatalf("append needing to evict a reject lane: %v, want ErrFull", err)
		}
		if _, err := b.Append(ctx, "audit", []byte("audit-0002")); !errors.Is(err, ErrFull) {
			t.Fatalf("append to a full reject lane: %v, want ErrFull", err)
		}
		if ls := b.Stats().Lanes["audit"]; ls.Records != 2 || ls.Evicted != 0 || ls.Rejected != 1 {
			t.Fatalf("audit = %+v", ls)
		}
	})

	t.Run("EqualPriorityEvictsOldestFirst", func(t *testing.T) {
		clock := newFakeClock()
		o := testOptions(t, clock)
		o.Lanes = []LaneOptions{{Name: "a", Durability: Batched}, {Name: "b", Durability: Batched}}
		r := RecordOverhead("a") + 1
		o.MaxBytes = 3 * r
		b := open(t, o)
		mustAppend(t, b, "b", []byte("1"))
		clock.Advance(time.Second)
		mustAppend(t, b, "a", []byte("2"))
		clock.Advance(time.Second)
		mustAppend(t, b, "a", []byte("3"))
		clock.Advance(time.Second)
		mustAppend(t, b, "a", []byte("4"))
		st := b.Stats()
		if st.Lanes["b"].Evicted != 1 || st.Lanes["a"].Evicted != 0 {
			t.Fatalf("evicted a=%d b=%d, want the oldest record (lane b) evicted", st.Lanes["a"].Evicted, st.Lanes["b"].Evicted)
		}
	})

	t.Run("TooLarge", func(t *testing.T) {
		o := testOptions(t, nil)
		o.MaxRecordBytes = 100
		o.Lanes[0].MaxBytes = 2 * (RecordOverhead("score") + 100)
		b := open(t, o)
		if _, err := b.Append(ctx, "score", make([]byte, 101)); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("101-byte record with a 100-byte max: %v, want ErrTooLarge", err)
		}
		mustAppend(t, b, "score", make([]byte, 100))
		if _, err := b.Append(ctx, "score", make([]byte, 100), make([]byte, 100), make([]byte, 100)); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("append larger than the lane cap: %v, want ErrTooLarge", err)
		}
		if n := b.Stats().Lanes["score"].Records; n != 1 {
			t.Fatalf("records = %d, want 1: a failed append stores nothing", n)
		}
	})

	t.Run("UnknownLane", func(t *testing.T) {
		b := open(t, testOptions(t, nil))
		mustRegister(t, b, "c")
		laneOpsFail(t, b, "c", "nope", ErrUnknownLane)
		if b.LastSeq("nope") != 0 {
			t.Errorf("LastSeq of unknown lane != 0")
		}
		select {
		case <-b.Notify("nope"):
		default:
			t.Errorf("Notify of an unknown lane must be closed")
		}
		if _, err := b.Read("c", "score", 0); err == nil {
			t.Errorf("Read with max 0 succeeded")
		}
	})

	t.Run("CanceledContext", func(t *testing.T) {
		b := open(t, testOptions(t, nil))
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := b.Append(cctx, "alert", []byte("x")); !errors.Is(err, context.Canceled) {
			t.Fatalf("Append with a canceled context: %v", err)
		}
		if b.LastSeq("alert") != 0 || b.Stats().Lanes["alert"].Records != 0 {
			t.Fatal("Append with a canceled context stored something")
		}
	})

	t.Run("TTLExpiresOldRecords", func(t *testing.T) {
		clock := newFakeClock()
		o := testOptions(t, clock)
		o.Lanes[0].TTL = time.Minute
		b := open(t, o)
		mustRegister(t, b, "c", "score")
		mustAppend(t, b, "score", payloads("old", 2)...)
		clock.Advance(30 * time.Second)
		mustAppend(t, b, "score", payloads("new", 1)...)
		if ls := b.Stats().Lanes["score"]; ls.OldestAge != 30*time.Second {
			t.Fatalf("OldestAge = %v, want 30s", ls.OldestAge)
		}
		clock.Advance(30 * time.Second)
		if got := seqsOf(mustRead(t, b, "c", "score", 10)); !slices.Equal(got, []uint64{3}) {
			t.Fatalf("Read after the first two expired = %v, want [3]", got)
		}
		recs, _ := b.ReadFrom("score", 0, 10)
		if got := seqsOf(recs); !slices.Equal(got, []uint64{3}) {
			t.Fatalf("ReadFrom after expiry = %v, want [3]", got)
		}
		ls := b.Stats().Lanes["score"]
		if ls.Expired != 2 || ls.Records != 1 || ls.OldestAge != 30*time.Second {
			t.Fatalf("lane stats = %+v, want 2 expired, 1 record aged 30s", ls)
		}
		if cs := b.Stats().Consumers["c"]["score"]; cs.AckFloor != 2 || cs.Lag != 1 {
			t.Fatalf("cursor = %+v, want floor moved past expired records to 2, lag 1", cs)
		}
		clock.Advance(time.Hour)
		if ls := b.Stats().Lanes["score"]; ls.Expired != 3 || ls.Records != 0 || ls.Bytes != 0 {
			t.Fatalf("lane stats = %+v, want everything expired", ls)
		}
	})

	t.Run("Stats", func(t *testing.T) {
		clock := newFakeClock()
		b := open(t, testOptions(t, clock))
		mustRegister(t, b, "c", "score", "alert")
		mustRegister(t, b, "d", "score")
		mustAppend(t, b, "score", []byte("12345"), []byte("123"))
		mustAppend(t, b, "alert", []byte("1"))
		clock.Advance(2 * time.Second)
		mustAck(t, b, "c", "score", 2)
		st := b.Stats()
		ls := st.Lanes["score"]
		want := LaneStats{Records: 2, Bytes: 8 + 2*RecordOverhead("score"), OldestAge: 2 * time.Second, LastSeq: 2}
		if ls != want {
			t.Fatalf("score stats = %+v, want %+v", ls, want)
		}
		if st.Bytes != ls.Bytes+1+RecordOverhead("alert") {
			t.Fatalf("total bytes = %d", st.Bytes)
		}
		if cs := st.Consumers["c"]["score"]; cs != (ConsumerStats{AckFloor: 0, Pending: 1, Lag: 1}) {
			t.Fatalf("consumer stats = %+v", cs)
		}
		if cs := st.Consumers["d"]["score"]; cs != (ConsumerStats{Lag: 2}) {
			t.Fatalf("consumer stats = %+v", cs)
		}
		if cs := st.Consumers["c"]["alert"]; cs != (ConsumerStats{Lag: 1}) {
			t.Fatalf("consumer stats = %+v", cs)
		}
	})

	t.Run("NotifyWakesWaiters", func(t *testing.T) {
		b := open(t, testOptions(t, nil))
		mustRegister(t, b, "c", "alert")
		wake := b.Notify("alert")
		select {
		case <-wake:
			t.Fatal("Notify channel closed before any append")
		default:
		}
		got := make(chan []Record)
		go func() {
			for {
				w := b.Notify("alert")
				recs, err := b.Read("c", "alert", 10)
				if err != nil || len(recs) > 0 {
					got <- recs
					return
				}
				<-w
			}
		}()
		mustAppend(t, b, "alert", []byte("wake up"))
		select {
		case <-wake:
		default:
			t.Fatal("Notify channel not closed when Append returned")
		}
		select {
		case recs := <-got:
			if len(recs) != 1 || string(recs[0].Data) != "wake up" {
				t.Fatalf("waiter read %v", recs)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("waiter never woke up")
		}
	})

	t.Run("ConcurrentAppendsGetDistinctSequences", func(t *testing.T) {
		b := open(t, testOptions(t, nil))
		const writers, each = 8, 50
		var mu sync.Mutex
		seen := map[uint64]string{}
		var wg sync.WaitGroup
		for w := range writers {
			wg.Go(func() {
				for i := range each {
					lane := "score"
					if i%2 == 0 {
						lane = "alert"
					}
					d := fmt.Appendf(nil, "%s-%d-%d", lane, w, i)
					seqs, err := b.Append(ctx, lane, d)
					if err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					key := seqs[0]
					if lane == "alert" {
						key += 1 << 32
					}
					if prev, dup := seen[key]; dup {
						t.Errorf("seq %d given to %q and %q", seqs[0], prev, d)
					}
					seen[key] = string(d)
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		for _, lane := range []string{"score", "alert"} {
			recs, err := b.ReadFrom(lane, 0, writers*each)
			if err != nil {
				t.Fatal(err)
			}
			if len(recs) != writers*each/2 {
				t.Fatalf("%s has %d records, want %d", lane, len(recs), writers*each/2)
			}
			for i, r := range recs {
				key := r.Seq
				if lane == "alert" {
					key += 1 << 32
				}
				if r.Seq != uint64(i+1) || seen[key] != string(r.Data) {
					t.Fatalf("%s record %d = seq %d %q, want seq %d %q", lane, i, r.Seq, r.Data, i+1, seen[key])
				}
			}
		}
	})

	t.Run("CloseIsIdempotent", func(t *testing.T) {
		b := open(t, testOptions(t, nil))
		mustRegister(t, b, "c", "score")
		mustAppend(t, b, "score", []byte("x"))
		wake := b.Notify("score")
		if err := b.Close(); err != nil {
			t.Fatal(err)
		}
		if err := b.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		select {
		case <-wake:
		default:
			t.Fatal("Close must wake Notify waiters")
		}
		laneOpsFail(t, b, "c", "score", ErrClosed)
		if err := b.RegisterConsumer("d"); !errors.Is(err, ErrClosed) {
			t.Errorf("RegisterConsumer after Close: %v", err)
		}
	})
}
