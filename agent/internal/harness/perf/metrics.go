package perf

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Metrics are the samples of one Prometheus text exposition, keyed by the
// metric name with its labels as exposed: `vigil_drops_total{reason="late",source="bus"}`.
type Metrics map[string]float64

// Sum adds every sample of the metric name, whatever its labels.
func (m Metrics) Sum(name string) float64 {
	var s float64
	for k, v := range m {
		if k == name || strings.HasPrefix(k, name+"{") {
			s += v
		}
	}
	return s
}

// With returns the samples of the metric name whose labels contain every
// given `label="value"` pair, keyed as in m.
func (m Metrics) With(name string, labels ...string) Metrics {
	out := Metrics{}
next:
	for k, v := range m {
		if k != name && !strings.HasPrefix(k, name+"{") {
			continue
		}
		for _, l := range labels {
			if !strings.Contains(k, l) {
				continue next
			}
		}
		out[k] = v
	}
	return out
}

// ParseMetrics reads the Prometheus text format: comments are skipped,
// every other line is `name{labels} value [timestamp]`.
func ParseMetrics(r io.Reader) (Metrics, error) {
	m := Metrics{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		// Label values may hold spaces: the value follows the closing brace.
		cut := strings.LastIndexByte(line, '}')
		var name, rest string
		if cut >= 0 {
			name, rest = line[:cut+1], line[cut+1:]
		} else {
			name, rest, _ = strings.Cut(line, " ")
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return nil, fmt.Errorf("metrics line %q: no value", line)
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			return nil, fmt.Errorf("metrics line %q: %w", line, err)
		}
		m[name] = v
	}
	return m, sc.Err()
}

var metricsClient = &http.Client{Timeout: 5 * time.Second}

// ScrapeMetrics gets and parses http://addr/metrics.
func ScrapeMetrics(addr string) (Metrics, error) {
	resp, err := metricsClient.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, fmt.Errorf("scrape metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape metrics: %s", resp.Status)
	}
	return ParseMetrics(resp.Body)
}
