package publish

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/childproc"
	"github.com/vigil-edge/vigil/agent/internal/mqtttest"
	"github.com/vigil-edge/vigil/agent/internal/testkit"
	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/buffer"
)

// Environment of the child process of TestKill.
const (
	envChildDir    = "VIGIL_PUBLISH_CHILD_DIR"    // data directory (Badger and state)
	envChildBroker = "VIGIL_PUBLISH_CHILD_BROKER" // broker URL
	envChildTotal  = "VIGIL_PUBLISH_CHILD_TOTAL"  // alerts the buffer must hold in the end
	envChildRate   = "VIGIL_PUBLISH_CHILD_RATE"   // replay rate
)

// TestKillChild is the child process of TestKill, not a test: it runs a
// publisher over a Badger buffer until it is killed or told to stop
// (SIGTERM).
func TestKillChild(t *testing.T) {
	dir := os.Getenv(envChildDir)
	if dir == "" {
		t.Skip("the child process of TestKill")
	}
	total, _ := strconv.Atoi(os.Getenv(envChildTotal))
	rate, _ := strconv.ParseFloat(os.Getenv(envChildRate), 64)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()

	bo := buffer.DefaultBadgerOptions(dir + "/buffer")
	bo.Lanes = testLanes()
	buf, err := buffer.OpenBadger(bo)
	if err != nil {
		t.Fatalf("open buffer: %v", err)
	}
	defer buf.Close()
	// The alerts that were in the buffer before this start are the
	// backlog; the publisher starts first, so the rest are live.
	before := int(buf.LastSeq(record.LaneAlert))
	opts := testOptions(os.Getenv(envChildBroker))
	opts.StateDir = dir
	opts.ReplayRate = rate
	opts.ReplayBurst = 10
	p, err := New(buf, opts)
	if err != nil {
		t.Fatal(err)
	}
	if before == 0 {
		// First run: a backlog before connecting.
		appendN(t, buf, record.LaneAlert, 0, total, func(i int) []byte { return alertJSON("pump", i) })
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	if before > 0 {
		if err := testkit.Poll(10*time.Second, p.Connected); err != nil {
			t.Fatal("not connected")
		}
		appendN(t, buf, record.LaneAlert, before, total-before, func(i int) []byte { return alertJSON("pump", i) })
	}
	fmt.Println("appended")
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// child is a running child process.
type child struct {
	*childproc.Proc
	out *testkit.Buffer
}

func startChild(t *testing.T, dir, broker string, total int, rate float64) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKillChild$", "-test.v")
	cmd.Env = append(os.Environ(),
		envChildDir+"="+dir, envChildBroker+"="+broker,
		envChildTotal+"="+strconv.Itoa(total), envChildRate+"="+strconv.FormatFloat(rate, 'f', -1, 64))
	c := &child{out: &testkit.Buffer{}}
	cmd.Stdout, cmd.Stderr = c.out, c.out
	var err error
	if c.Proc, err = childproc.Start(cmd); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.Stop(syscall.SIGKILL, 20*time.Second)
		if t.Failed() {
			t.Logf("child output:\n%s", c.out.String())
		}
	})
	return c
}

// stop sends sig to the running child and fails the test if it has not
// exited 20 s later.
func (c *child) stop(t *testing.T, sig syscall.Signal) {
	t.Helper()
	if !c.Running() {
		t.Fatalf("the child exited before %v; output:\n%s", sig, c.out.String())
	}
	if err := c.Stop(sig, 20*time.Second); err != nil {
		t.Fatalf("child did not exit on %v: %v; output:\n%s", sig, err, c.out.String())
	}
}

// TestKill (issue 6, 9b): a publisher killed with SIGKILL leaves its Last
// Will "offline"; restarted over the same data directory, it publishes the
// backlog, and any alert sent twice carries the same id and seq.
func TestKill(t *testing.T) {
	if testing.Short() {
		t.Skip("starts child processes")
	}
	b := mqtttest.Start(t, mqtttest.Options{})
	alerts := mqtttest.Subscribe(t, b, "vigil/dev1/alerts/#", 1)
	status := mqtttest.Subscribe(t, b, "vigil/dev1/status", 1)
	dir := t.TempDir()
	const first, total = 2000, 2100

	c1 := startChild(t, dir, b.URL(), first, 2000)
	testkit.WaitFor(t, 30*time.Second, "part of the backlog published", func() bool { return alerts.Len() >= 300 })
	c1.stop(t, syscall.SIGKILL)
	killedAt := alerts.Len()
	// The broker sees the connection drop and publishes the Last Will.
	testkit.WaitFor(t, 10*time.Second, "the Last Will", func() bool {
		st, ok := lastStatus(t, status)
		return ok && st.State == "offline"
	})
	will, _ := lastStatus(t, status)
	if will.Reason != "connection lost" || will.BirthSeq != 1 || !will.Since.IsZero() {
		t.Errorf("Last Will %+v; want offline, connection lost, birth 1, no since", will)
	}
	if killedAt >= first {
		t.Fatalf("all %d alerts were out before the kill; the test proves nothing", killedAt)
	}

	c2 := startChild(t, dir, b.URL(), total, 0)
	testkit.WaitFor(t, 30*time.Second, "online again", func() bool {
		st, ok := lastStatus(t, status)
		return ok && st.State == "online" && st.BirthSeq == 2
	})
	ids := make([]string, total)
	for i := range ids {
		ids[i] = fmt.Sprintf("a-pump-%06d", i)
	}
	testkit.WaitFor(t, 60*time.Second, "every alert", received(alerts, ids))
	// Copies of an alert are the same record: same id, seq and content but
	// for the replayed flag.
	payloads := map[string][]byte{}
	dups := 0
	for _, m := range alerts.Messages() {
		var w map[string]any
		if err := json.Unmarshal(m.Payload, &w); err != nil {
			t.Fatal(err)
		}
		id := w["id"].(string)
		delete(w, "replayed")
		norm, _ := json.Marshal(w)
		if prev, ok := payloads[id]; ok {
			dups++
			if !bytes.Equal(prev, norm) {
				t.Errorf("duplicate of %s differs:\n%s\n%s", id, prev, norm)
			}
			continue
		}
		payloads[id] = norm
	}
	t.Logf("%d alerts, %d received before the kill, %d duplicates after the restart", total, killedAt, dups)
	checkDelivery(t, alerts.Messages(), ids)

	// A clean stop publishes "offline" with reason shutdown.
	testkit.WaitFor(t, 10*time.Second, "the child's appends", func() bool { return strings.Contains(c2.out.String(), "appended") })
	c2.stop(t, syscall.SIGTERM)
	testkit.WaitFor(t, 10*time.Second, "the clean offline", func() bool {
		st, ok := lastStatus(t, status)
		return ok && st.State == "offline" && st.Reason == "shutdown" && st.BirthSeq == 2
	})
}
