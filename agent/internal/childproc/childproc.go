// Package childproc runs a program as a child process that the test
// doubles and harnesses stop, kill and watch: mosquitto (mqtttest),
// nats-server (natstest) and vigil itself (the chaos and perf harnesses).
// A Proc is reaped as soon as it exits, so asking whether it still runs
// never blocks.
package childproc

import (
	"errors"
	"os"
	"os/exec"
	"sync"
	"time"
)

// ErrKilled is Stop's error when the process outlived the grace period
// and was killed.
var ErrKilled = errors.New("childproc: the process did not exit within the grace period and was killed")

// Proc is a started child process.
type Proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // Wait's result, once done is closed
}

// Start starts cmd and waits for it in the background.
func Start(cmd *exec.Cmd) (*Proc, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Proc{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Err is what waiting for the process returned (nil for a clean exit);
// read it once Done is closed.
func (p *Proc) Err() error { return p.err }

// Pid is the process's id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) error { return p.cmd.Process.Signal(sig) }

// Running reports whether the process has not exited yet. A nil Proc
// (never started) does not run.
func (p *Proc) Running() bool {
	if p == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Stop sends sig to the process and waits until it exits; one still
// running after grace is killed, and Stop returns ErrKilled. Stopping a
// process that has exited, or a nil Proc, does nothing.
func (p *Proc) Stop(sig os.Signal, grace time.Duration) error {
	if !p.Running() {
		return nil
	}
	_ = p.cmd.Process.Signal(sig) // fails only if it has just exited
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
		return ErrKilled
	}
}

// Slot holds the current process of a server that a test stops and
// starts again: nil until the first Set, then the latest one. It is safe
// for concurrent use.
type Slot struct {
	mu sync.Mutex
	p  *Proc
}

// Set makes p the current process.
func (s *Slot) Set(p *Proc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.p = p
}

// Get returns the current process, nil before the first Set.
func (s *Slot) Get() *Proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.p
}
