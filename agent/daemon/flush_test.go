package daemon

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestFlushSyncsTheBuffer (issue 18 item 4): the flush command fsyncs the
// buffer and its reply names every lane with what was synced and held; the
// score lane's durable sequence number covers what the pipeline stored.
func TestFlushSyncsTheBuffer(t *testing.T) {
	cfgPath, _ := testConfig(t, 600, "")
	d, _ := startDaemon(t, cfgPath)
	waitFor(t, 60e9, func() bool { return d.Stats().Scores > 0 })
	last := d.buf.LastSeq("score")
	msg, err := remoteCommands{d}.Flush(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(msg, "buffer synced to disk: ") {
		t.Fatalf("reply %q", msg)
	}
	for _, lane := range []string{"score", "alert", "advice", "deadletter"} {
		if !strings.Contains(msg, lane+": ") {
			t.Errorf("reply %q does not name lane %s", msg, lane)
		}
	}
	m := regexp.MustCompile(`score: \d+ synced, durable to seq (\d+), \d+ held`).FindStringSubmatch(msg)
	if m == nil {
		t.Fatalf("reply %q has no score lane figures", msg)
	}
	if seq, _ := strconv.ParseUint(m[1], 10, 64); seq < last {
		t.Errorf("score durable to %d, but %d was stored before the flush", seq, last)
	}
}

// TestFlushOfAMemoryBufferSaysSo: a memory buffer has no disk; the reply
// says that rather than claiming durability.
func TestFlushOfAMemoryBufferSaysSo(t *testing.T) {
	cfgPath, _ := testConfig(t, 200, "")
	rewrite(t, cfgPath, "buffer: {kind: badger, memory_budget: 16MiB}", "buffer: {kind: memory}")
	d, _ := startDaemon(t, cfgPath)
	msg, err := remoteCommands{d}.Flush(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(msg, "memory buffer: nothing on disk to sync") || !strings.Contains(msg, "score: ") {
		t.Fatalf("reply %q", msg)
	}
}
