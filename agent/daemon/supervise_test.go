package daemon

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/forward"
	"github.com/vigil-edge/vigil/agent/health"
	"github.com/vigil-edge/vigil/agent/internal/testkit"
)

var errInjected = errors.New("injected failure")

// failOnce wraps the part named part so that its first run fails with
// errInjected (after running the real part briefly, so that the restart
// runs it a second time); later runs are the real ones.
func failOnce(part string) func(string, func(context.Context) error) func(context.Context) error {
	var once sync.Once
	return func(name string, run func(context.Context) error) func(context.Context) error {
		if name != part {
			return run
		}
		return func(ctx context.Context) error {
			failed := false
			once.Do(func() { failed = true })
			if failed {
				stopped, cancel := context.WithCancel(ctx)
				cancel()
				if err := run(stopped); err != nil {
					return err
				}
				return errInjected
			}
			return run(ctx)
		}
	}
}

// TestAFailedPartIsRestartedAndCounted: a consumer or a live source that
// fails while the daemon runs is run again after a backoff, the restart is
// counted in health and /metrics, and the part does its job afterwards.
func TestAFailedPartIsRestartedAndCounted(t *testing.T) {
	for _, part := range []string{"consumer/console", "source/events", "consumer/mqtt"} {
		t.Run(part, func(t *testing.T) {
			extra := ""
			if part == "consumer/mqtt" {
				extra = `mqtt: {embedded_broker: {listen: "127.0.0.1:0"}}`
			}
			cfgPath, _ := testConfig(t, 3000, extra)
			out := &testkit.Buffer{}
			d, stop := startDaemonWith(t, cfgPath, func(o *Options) {
				o.PrintAlerts, o.Stdout = true, out
				o.Restart = forward.Backoff{Initial: time.Millisecond, Max: time.Millisecond}
				o.WrapPart = failOnce(part)
			})
			waitFor(t, 30*time.Second, func() bool {
				p := d.Health().Parts[part]
				return p.Restarts == 1 && p.State == health.PartRunning
			})
			_, body := get(t, "http://"+d.Addr()+"/metrics")
			for _, want := range []string{`vigil_part_restarts_total{part="` + part + `"} 1`, `vigil_part_up{part="` + part + `"} 1`} {
				if !strings.Contains(body, want) {
					t.Fatalf("/metrics lacks %s", want)
				}
			}
			// The MQTT status command says so too.
			msg, err := remoteCommands{d}.Status(context.Background())
			if err != nil || !strings.Contains(msg, "restarted: "+part+" running after 1 restart(s)") {
				t.Fatalf("status: %q, %v", msg, err)
			}
			switch part {
			case "consumer/console":
				// The restarted printer prints the replay's alerts.
				waitFor(t, 60*time.Second, func() bool { return strings.Contains(out.String(), " ALERT ") })
			case "consumer/mqtt":
				// The publisher runs again, and connects.
				waitFor(t, 30*time.Second, func() bool { return d.Health().Forwarders["mqtt"].State == "ok" })
			case "source/events":
				// The restarted source still takes events.
				code, _ := post(t, "http://"+d.Addr()+"/v1/events",
					`[{"event_id":"e1","event_name":"page_view","user_id":"u1","timestamp":"`+time.Now().UTC().Format(time.RFC3339)+`"}]`)
				if code != http.StatusAccepted {
					t.Fatalf("POST /v1/events after the restart: %d", code)
				}
			}
			if err := stop(); err != nil {
				t.Fatalf("Run: %v: a restarted part must not end it", err)
			}
		})
	}
}

// TestARestartingPartDegradesHealth: while a failed part waits for its
// restart, /healthz says so (503, naming the part and its error) and
// /metrics has it down; stopping the daemon meanwhile is a clean stop.
func TestARestartingPartDegradesHealth(t *testing.T) {
	cfgPath, _ := testConfig(t, 100, "")
	d, stop := startDaemonWith(t, cfgPath, func(o *Options) {
		o.PrintAlerts = true
		o.Restart = forward.Backoff{Initial: time.Hour, Max: time.Hour}
		o.WrapPart = failOnce("consumer/console")
	})
	waitFor(t, 30*time.Second, func() bool { return d.Health().Parts["consumer/console"].State == health.PartRestarting })
	code, body := get(t, "http://"+d.Addr()+"/healthz")
	if code != http.StatusServiceUnavailable || !strings.Contains(body, "consumer/console is restarting: injected failure") {
		t.Fatalf("/healthz: %d %s", code, body)
	}
	_, body = get(t, "http://"+d.Addr()+"/metrics")
	for _, want := range []string{`vigil_part_restarts_total{part="consumer/console"} 1`, `vigil_part_up{part="consumer/console"} 0`} {
		if !strings.Contains(body, want) {
			t.Fatalf("/metrics lacks %s", want)
		}
	}
	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
}

// TestAFailedPartEndsRun: the parts a restart does not mend (a replay
// source, the pipeline, the embedded broker, the HTTP server) end Run with their error, so
// that systemd restarts the process.
func TestAFailedPartEndsRun(t *testing.T) {
	for _, tt := range []struct{ part, extra, want string }{
		{"source/pump", "", "source/pump: injected failure"},
		{"pipeline", "", "pipeline: injected failure"},
		{"embedded-broker", `mqtt: {embedded_broker: {listen: "127.0.0.1:0"}}`, "embedded broker: injected failure"},
		{"http", "", "http server: injected failure"},
	} {
		t.Run(tt.part, func(t *testing.T) {
			cfgPath, _ := testConfig(t, 100, tt.extra)
			fail := make(chan struct{})
			d, done, _ := launch(t, cfgPath, func(o *Options) {
				o.WrapPart = func(name string, run func(context.Context) error) func(context.Context) error {
					if name != tt.part {
						return run
					}
					return func(ctx context.Context) error {
						select {
						case <-fail:
							return errInjected
						case <-ctx.Done():
							return nil
						}
					}
				}
			})
			close(fail) // the daemon serves: now the part fails
			var err error
			select {
			case err = <-done:
			case <-time.After(60 * time.Second):
				t.Fatal("Run did not end after the part failed")
			}
			if !errors.Is(err, errInjected) || err.Error() != tt.want {
				t.Fatalf("Run: %v, want %q", err, tt.want)
			}
			if p, ok := d.Health().Parts[tt.part]; ok && p.Restarts != 0 {
				t.Fatalf("%s restarted %d times", tt.part, p.Restarts)
			}
		})
	}
}
