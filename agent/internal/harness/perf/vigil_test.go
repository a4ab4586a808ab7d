package perf

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/childproc"
)

// Flags of the drivers. None is set by `go test ./...`, so the drivers
// skip there; perf.mk sets them.
var (
	vigilBin = flag.String("perf.vigil", "../../../../bin/vigil", "the vigil binary the drivers run")
	outDir   = flag.String("perf.out", "../../../../tmp/perf", "where the drivers write results, logs and plots")
)

// vigilProc is a `vigil run` process started by a driver.
type vigilProc struct {
	*childproc.Proc
	logPath string
	addr    string // its HTTP server, for /metrics and /healthz
}

// startVigil writes cfg to dir/vigil.yaml and runs `vigil run` on it with
// its log in dir/vigil.log, and waits until it serves and every line in
// waitLogs has appeared in its log.
func startVigil(t testing.TB, dir, cfg string, waitLogs ...string) *vigilProc {
	t.Helper()
	bin := snapshotVigil(t)
	cfgPath := filepath.Join(dir, "vigil.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	v := &vigilProc{logPath: filepath.Join(dir, "vigil.log")}
	logf, err := os.Create(v.logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "run", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	v.Proc, err = childproc.Start(cmd)
	logf.Close() // vigil has its own copy
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { v.stop(t) })
	running := regexp.MustCompile(`msg="vigil running".* http=(\S+)`)
	waitUntil(t, 30*time.Second, "vigil to start", func() bool {
		select {
		case <-v.Done():
			t.Fatalf("vigil exited: %v\n%s", v.Err(), v.log())
		default:
		}
		log := v.log()
		if m := running.FindStringSubmatch(log); m != nil {
			v.addr = m[1]
		}
		if v.addr == "" {
			return false
		}
		for _, w := range waitLogs {
			if !strings.Contains(log, w) {
				return false
			}
		}
		return true
	})
	return v
}

func (v *vigilProc) log() string {
	b, _ := os.ReadFile(v.logPath)
	return string(b)
}

// stop ends vigil with SIGTERM (an ordered shutdown), then SIGKILL after
// 20 s.
func (v *vigilProc) stop(t testing.TB) {
	if err := v.Stop(syscall.SIGTERM, 20*time.Second); err != nil {
		t.Errorf("vigil did not stop within 20 s of SIGTERM; killed")
	}
}

var (
	snapOnce sync.Once
	snapBin  string
	snapErr  error
)

// snapshotVigil copies -perf.vigil and its lib/ folder (the TFLite
// runtime) to a private directory once per run and returns the copy's
// path. A `make build` elsewhere rewrites bin/lib/libtensorflowlite_c.so
// in place (cp -f keeps the inode), which kills a running vigil with
// SIGBUS inside TFLite; the drivers' vigil runs from its own copy.
func snapshotVigil(t testing.TB) string {
	snapOnce.Do(func() {
		src, err := filepath.Abs(*vigilBin)
		if err != nil {
			snapErr = err
			return
		}
		dir, err := os.MkdirTemp("", "vigil-perf-bin-")
		if err != nil {
			snapErr = err
			return
		}
		if err := os.MkdirAll(filepath.Join(dir, "lib"), 0o755); err != nil {
			snapErr = err
			return
		}
		snapErr = copyFile(src, filepath.Join(dir, "vigil"))
		libs, _ := filepath.Glob(filepath.Join(filepath.Dir(src), "lib", "*"))
		for _, l := range libs {
			if snapErr == nil {
				snapErr = copyFile(l, filepath.Join(dir, "lib", filepath.Base(l)))
			}
		}
		snapBin = filepath.Join(dir, "vigil")
	})
	if snapErr != nil {
		t.Fatalf("vigil binary %s: %v (run make build first)", *vigilBin, snapErr)
	}
	return snapBin
}

func copyFile(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}

// countLog counts the log lines that contain s.
func (v *vigilProc) countLog(s string) int {
	n := 0
	sc := bufio.NewScanner(strings.NewReader(v.log()))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), s) {
			n++
		}
	}
	return n
}

// waitUntil polls cond every 20 ms until it holds, failing t after timeout.
// It waits for a condition; it asserts nothing about how long that takes.
func waitUntil(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sampler reads /proc of a process every interval until stopped.
type sampler struct {
	mu      sync.Mutex
	samples []ProcSample
	stop    context.CancelFunc
	done    chan struct{}
}

func sampleProc(pid int, every time.Duration) *sampler {
	ctx, cancel := context.WithCancel(context.Background())
	s := &sampler{stop: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		tk := time.NewTicker(every)
		defer tk.Stop()
		for {
			if p, err := ReadProc(pid); err == nil {
				s.mu.Lock()
				s.samples = append(s.samples, p)
				s.mu.Unlock()
			}
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
			}
		}
	}()
	return s
}

// end stops sampling and returns the samples.
func (s *sampler) end() []ProcSample {
	s.stop()
	<-s.done
	return s.samples
}

func maxRSS(ss []ProcSample) int64 {
	var m int64
	for _, s := range ss {
		m = max(m, s.RSS)
	}
	return m
}

// writeJSON writes v to dir/name, indented.
func writeJSON(t testing.TB, name string, v any) string {
	t.Helper()
	if err := os.MkdirAll(*outDir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(*outDir, name)
	if err := os.WriteFile(p, append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// loadAvg returns /proc/loadavg's first three fields, for the record.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// mkdir makes dir afresh.
func mkdir(t testing.TB, dir string) {
	t.Helper()
	os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}
