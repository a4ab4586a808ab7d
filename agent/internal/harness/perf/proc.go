package perf

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat. It
// is 100 on every Linux architecture Vigil runs on.
const clockTicks = 100

// ProcSample is what /proc says about a process at one moment.
type ProcSample struct {
	At      time.Time
	CPU     time.Duration // user + system time since the process started
	RSS     int64         // resident set size, bytes (VmRSS)
	RSSAnon int64         // of which anonymous memory (heaps: Go's, TFLite's, Badger's)
	RSSFile int64         // of which file pages (the binary, libtensorflowlite_c, mapped Badger files)
	Threads int
	FDs     int // open file descriptors
}

// ReadProc reads /proc/PID/stat, /proc/PID/status and /proc/PID/fd.
func ReadProc(pid int) (ProcSample, error) {
	s := ProcSample{At: time.Now()}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, fmt.Errorf("read proc stat of %d: %w", pid, err)
	}
	cpu, threads, err := parseStat(stat)
	if err != nil {
		return s, fmt.Errorf("parse /proc/%d/stat: %w", pid, err)
	}
	s.CPU, s.Threads = cpu, threads
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, fmt.Errorf("read proc status of %d: %w", pid, err)
	}
	s.RSS = parseStatusKB(status, "VmRSS:") * 1024
	s.RSSAnon = parseStatusKB(status, "RssAnon:") * 1024
	s.RSSFile = parseStatusKB(status, "RssFile:") * 1024
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return s, fmt.Errorf("read proc fds of %d: %w", pid, err)
	}
	s.FDs = len(fds)
	return s, nil
}

// parseStat returns utime+stime and the thread count from the contents of
// /proc/PID/stat. The command name (field 2) may hold spaces and
// parentheses, so fields are counted from the last ')'.
func parseStat(b []byte) (cpu time.Duration, threads int, err error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("no ')' in %q", b)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime 15, num_threads 20.
	if len(f) < 18 {
		return 0, 0, fmt.Errorf("%d fields after the command, want ≥ 18", len(f))
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	th, err3 := strconv.Atoi(f[17])
	if err1 != nil || err2 != nil || err3 != nil {
		return 0, 0, fmt.Errorf("utime %q, stime %q, num_threads %q", f[11], f[12], f[17])
	}
	return time.Duration(ut+st) * time.Second / clockTicks, th, nil
}

// parseStatusKB returns the value in kB of a /proc/PID/status line such as
// "VmRSS:   12345 kB", or 0.
func parseStatusKB(b []byte, key string) int64 {
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, key); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				n, _ := strconv.ParseInt(f[0], 10, 64)
				return n
			}
		}
	}
	return 0
}

// DirSize is the disk space the files under dir take (allocated blocks, as
// du counts them; a sparse or preallocated file counts what it occupies).
func DirSize(dir string) int64 {
	var n int64
	walk(dir, func(fi os.FileInfo) { n += allocated(fi) })
	return n
}

func walk(dir string, fn func(os.FileInfo)) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		p := dir + "/" + e.Name()
		if e.IsDir() {
			walk(p, fn)
			continue
		}
		if fi, err := e.Info(); err == nil {
			fn(fi)
		}
	}
}

// MB formats bytes as mebibytes with one decimal.
func MB(b int64) string { return strconv.FormatFloat(float64(b)/(1<<20), 'f', 1, 64) }
