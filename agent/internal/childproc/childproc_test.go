package childproc

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"
)

// startSh runs script with sh, after it ignored SIGTERM if trap is set,
// and returns once the script runs (with its trap set).
func startSh(t *testing.T, trap bool, script string) *Proc {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	prelude := "echo started; "
	if trap {
		prelude = "trap '' TERM; " + prelude
	}
	cmd := exec.Command("sh", "-c", prelude+script)
	cmd.Stdout = w
	p, err := Start(cmd)
	w.Close() // the child has its own copy
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Stop(syscall.SIGKILL, 10*time.Second) })
	if _, err := bufio.NewReader(r).ReadString('\n'); err != nil {
		t.Fatalf("reading the script's first line: %v", err)
	}
	return p
}

func TestStop(t *testing.T) {
	for _, tc := range []struct {
		name    string
		trap    bool // the process ignores SIGTERM
		sig     syscall.Signal
		grace   time.Duration
		wantErr error
		exitSig syscall.Signal // the signal that ended it
	}{
		{"SIGTERM ends it", false, syscall.SIGTERM, 10 * time.Second, nil, syscall.SIGTERM},
		{"SIGKILL ends it", false, syscall.SIGKILL, 10 * time.Second, nil, syscall.SIGKILL},
		{"SIGTERM ignored: killed after the grace", true, syscall.SIGTERM, 200 * time.Millisecond, ErrKilled, syscall.SIGKILL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startSh(t, tc.trap, "exec sleep 60")
			if !p.Running() {
				t.Fatal("not running after Start")
			}
			if err := p.Stop(tc.sig, tc.grace); !errors.Is(err, tc.wantErr) {
				t.Fatalf("Stop: %v, want %v", err, tc.wantErr)
			}
			if p.Running() {
				t.Fatal("still running after Stop")
			}
			select {
			case <-p.Done():
			default:
				t.Fatal("Done not closed after Stop")
			}
			var ee *exec.ExitError
			if !errors.As(p.Err(), &ee) {
				t.Fatalf("Err %v, want an *exec.ExitError", p.Err())
			}
			if ws := ee.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != tc.exitSig {
				t.Errorf("exit %v, want ended by %v", ee, tc.exitSig)
			}
			if err := p.Stop(tc.sig, tc.grace); err != nil {
				t.Errorf("second Stop: %v, want nil (nothing to stop)", err)
			}
		})
	}
}

func TestExitedByItself(t *testing.T) {
	p := startSh(t, false, "exit 3")
	<-p.Done()
	if p.Running() {
		t.Error("Running after exit")
	}
	var ee *exec.ExitError
	if !errors.As(p.Err(), &ee) || ee.ExitCode() != 3 {
		t.Errorf("Err %v, want exit status 3", p.Err())
	}
	if err := p.Stop(syscall.SIGTERM, time.Second); err != nil {
		t.Errorf("Stop of an exited process: %v", err)
	}
}

func TestNilProc(t *testing.T) {
	var p *Proc
	if p.Running() {
		t.Error("a nil Proc runs")
	}
	if err := p.Stop(syscall.SIGTERM, time.Second); err != nil {
		t.Errorf("Stop of a nil Proc: %v", err)
	}
}

func TestStartFails(t *testing.T) {
	if _, err := Start(exec.Command("/nonexistent/program")); err == nil {
		t.Error("Start of a missing program succeeded")
	}
}

func TestSlot(t *testing.T) {
	var s Slot
	if s.Get() != nil || s.Get().Running() {
		t.Fatal("an empty Slot holds a running process")
	}
	first := startSh(t, false, "exec sleep 60")
	s.Set(first)
	if s.Get() != first || !s.Get().Running() {
		t.Fatal("Get does not return the running process Set")
	}
	if err := s.Get().Stop(syscall.SIGTERM, 10*time.Second); err != nil || s.Get().Running() {
		t.Fatalf("Stop: %v; running %t", err, s.Get().Running())
	}
	second := startSh(t, false, "exec sleep 60")
	s.Set(second)
	if s.Get() != second || !s.Get().Running() {
		t.Error("Get does not return the process Set last")
	}
}
