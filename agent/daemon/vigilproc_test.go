package daemon

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// vigilBuilds holds one build of the vigil command per set of build tags.
var vigilBuilds sync.Map // tags → func() (string, error)

// vigilBinary builds the vigil command with tags ("" for none) once per
// test binary and returns its path.
func vigilBinary(tags string) (string, error) {
	build, _ := vigilBuilds.LoadOrStore(tags, sync.OnceValues(func() (string, error) {
		dir, err := os.MkdirTemp("", "vigil-test-bin-")
		if err != nil {
			return "", err
		}
		out := filepath.Join(dir, "vigil")
		// go test puts the go command it runs under first in $PATH.
		args := []string{"build", "-o", out}
		if tags != "" {
			args = append(args, "-tags", tags)
		}
		if b, err := exec.Command("go", append(args, "github.com/vigil-edge/vigil/agent")...).CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build -tags %q vigil: %w\n%s", tags, err, b)
		}
		return out, nil
	}))
	return build.(func() (string, error))()
}

// proc is a vigil process; exited is closed once it has been waited for.
type proc struct {
	cmd    *exec.Cmd
	exited chan struct{}
	at     time.Time // when it exited
}

// startVigil runs `vigil run --config cfgPath`, built with tags, as a
// process with env added to the test's environment; its log goes to
// logPath (appended, after a line naming env), shown when the test fails.
// The test's cleanup kills it.
func startVigil(t *testing.T, tags, cfgPath, logPath string, env ...string) *proc {
	t.Helper()
	bin, err := vigilBinary(tags)
	if err != nil {
		t.Fatal(err)
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(logf, "--- start, env %q\n", env)
	cmd := exec.Command(bin, "run", "--config", cfgPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Env = append(os.Environ(), env...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, exited: make(chan struct{})}
	go func() {
		cmd.Wait()
		p.at = time.Now()
		close(p.exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.exited
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("vigil's log:\n%s", b)
		}
	})
	return p
}

// startChild runs test name of this test binary as a child process with
// env added to the environment; its stderr is the test's and its stdout
// comes line by line through the returned scanner. The test's cleanup
// kills it.
func startChild(t *testing.T, name string, env ...string) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	child := exec.Command(os.Args[0], "-test.run=^"+name+"$")
	child.Env = append(os.Environ(), env...)
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	child.Stderr = os.Stderr
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { child.Process.Kill(); child.Wait() })
	return child, bufio.NewScanner(out)
}
