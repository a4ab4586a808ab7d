package watch

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/mqtttest"
	"github.com/vigil-edge/vigil/agent/internal/testkit"
)

// childEnv makes the test binary run `vigil watch`'s live view on its
// terminal instead of the tests: the tmux tests start it that way, so that
// what they read is what a person sees.
const childEnv = "VIGIL_WATCH_CHILD_BROKER"

// childSizeEnv gives the child a screen size (COLSxLINES) when its output
// is not a terminal.
const childSizeEnv = "VIGIL_WATCH_CHILD_SIZE"

func TestMain(m *testing.M) {
	if broker := os.Getenv(childEnv); broker != "" {
		os.Exit(watchChild(broker))
	}
	os.Exit(m.Run())
}

// watchChild runs the live view as `vigil watch` does in a terminal.
func watchChild(broker string) int {
	o := DefaultOptions()
	o.Broker, o.Out = broker, os.Stdout
	o.Size = TerminalSize(int(os.Stdout.Fd()))
	var cols, lines int
	if _, err := fmt.Sscanf(os.Getenv(childSizeEnv), "%dx%d", &cols, &lines); err == nil {
		o.Size = func() (int, int) { return cols, lines }
	}
	if restore, err := KeysMode(int(os.Stdin.Fd())); err == nil {
		defer restore()
		o.Keys = os.Stdin
	}
	if err := Watch(context.Background(), o); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// tmux drives one tmux server of the test's own.
type tmux struct {
	t      *testing.T
	socket string
}

func startTmux(t *testing.T, cols, lines int, command string) *tmux {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Skip("tmux is not installed (cross/setup.sh installs it)")
	}
	tm := &tmux{t: t, socket: fmt.Sprintf("vigil-watch-%d-%d", os.Getpid(), time.Now().UnixNano())}
	tm.run("-f", "/dev/null", "new-session", "-d", "-s", "w", "-x", fmt.Sprint(cols), "-y", fmt.Sprint(lines), command)
	t.Cleanup(func() { _ = exec.Command("tmux", "-L", tm.socket, "kill-server").Run() })
	return tm
}

func (tm *tmux) run(args ...string) string {
	tm.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-L", tm.socket}, args...)...).CombinedOutput()
	if err != nil {
		tm.t.Fatalf("tmux %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// screen is what the pane shows now, one string per line.
func (tm *tmux) screen() []string {
	tm.t.Helper()
	out, err := exec.Command("tmux", "-L", tm.socket, "capture-pane", "-p", "-t", "w").CombinedOutput()
	if err != nil {
		return nil // the pane is gone
	}
	return strings.Split(strings.TrimRight(string(out), "\n"), "\n")
}

func (tm *tmux) waitScreen(what string, cond func(lines []string) bool) []string {
	tm.t.Helper()
	var last []string
	testkit.WaitFor(tm.t, 20*time.Second, what, func() error {
		last = tm.screen()
		if !cond(last) {
			return fmt.Errorf("the screen shows:\n%s", strings.Join(last, "\n"))
		}
		return nil
	})
	return last
}

func contains(lines []string, s string) bool {
	return strings.Contains(strings.Join(lines, "\n"), s)
}

// TestWatchInTmux runs the live view in a real terminal (tmux) at 80×24 and
// 200×60 with a fleet of 60 devices, reads the screen, and presses keys.
func TestWatchInTmux(t *testing.T) {
	if testing.Short() {
		t.Skip("starts mosquitto and tmux")
	}
	b := mqtttest.Start(t, mqtttest.Options{})
	c := mqtttest.Connect(t, b)
	for _, m := range fleet(60) {
		if strings.HasSuffix(m.topic, "/status") {
			mqtttest.Publish(t, c, m.topic, 1, true, m.payload)
		}
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []struct{ cols, lines int }{{80, 24}, {200, 60}} {
		t.Run(fmt.Sprintf("%dx%d", size.cols, size.lines), func(t *testing.T) {
			tm := startTmux(t, size.cols, size.lines, fmt.Sprintf("env %s=%s %s -test.run=^$", childEnv, b.URL(), self))
			below := 60 - (size.lines - 1 - 3)
			if size.lines-1-3 >= 60 {
				below = 0
			}
			fold := fmt.Sprintf("… %d more device(s) below", below+1)
			// tmux takes a frame in pieces: wait for its last line, not
			// just its header, before reading it.
			scr := tm.waitScreen("a whole frame of 60 devices on the screen", func(l []string) bool {
				if !contains(l, "60 device(s): 54 online, 0 stale, 6 offline") {
					return false
				}
				if below > 0 {
					return contains(l, fold)
				}
				return contains(l, "dev-0058 ")
			})
			if len(scr) > size.lines {
				t.Errorf("%d lines on a %d-line terminal", len(scr), size.lines)
			}
			for _, l := range scr {
				if n := len([]rune(l)); n > size.cols {
					t.Errorf("a line of %d columns: %q", n, l)
				}
			}
			if !strings.HasPrefix(scr[3], "dev-0009 ") || !strings.Contains(scr[3], "offline") {
				t.Errorf("the first device shown is not the first offline one:\n%s", strings.Join(scr, "\n"))
			}
			if below > 0 && !strings.HasPrefix(scr[len(scr)-1], fold) {
				t.Errorf("the last line is not %q:\n%s", fold, strings.Join(scr, "\n"))
			}

			// A critical episode opens on an online device: it moves to the
			// top of the online devices, right under the offline ones.
			mqtttest.Publish(t, c, "vigil/dev-0042/alerts/pump", 1, false,
				[]byte(`{"seq":1,"stream":"pump","severity":"critical","state":"open","score":9,"threshold":1}`))
			tm.waitScreen("dev-0042's critical episode under the offline devices", func(l []string) bool {
				return len(l) > 9 && strings.HasPrefix(l[9], "dev-0042 ") && strings.Contains(l[9], "critical pump")
			})

			tm.run("send-keys", "-t", "w", "d")
			tm.waitScreen("the detailed view after 'd'", func(l []string) bool {
				return len(l) > 2 && strings.HasPrefix(l[2], "dev-0000  ONLINE") && !contains(l, "WORST OPEN EPISODE")
			})
			tm.run("send-keys", "-t", "w", "c")
			tm.waitScreen("the compact view after 'c'", func(l []string) bool { return contains(l, "WORST OPEN EPISODE") })
			tm.run("send-keys", "-t", "w", "q")
			mqtttest.WaitFor(t, 10*time.Second, "the view to quit on 'q'", func() bool {
				return exec.Command("tmux", "-L", tm.socket, "has-session", "-t", "w").Run() != nil
			})
		})
	}
}
