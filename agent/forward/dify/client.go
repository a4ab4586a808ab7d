package dify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/vigil-edge/vigil/agent/forward/internal/fwd"
)

// failure says what a failed call means for the alert.
type failure int

const (
	// notSent: the request provably never reached Dify (no connection was
	// made): running again is safe.
	notSent failure = iota + 1
	// throttled: Dify refused the run (429): running again later is safe.
	throttled
	// ambiguous: the request may have started a run (timeout, reset after
	// sending, 5xx, a broken stream): look the alert up before running.
	ambiguous
	// permanent: Dify refused the request as invalid (400): a dead letter.
	permanent
	// unauthorized: the key or the URL is wrong (401, 403, 404): failing.
	unauthorized
)

func (k failure) String() string {
	switch k {
	case notSent:
		return "not sent"
	case throttled:
		return "throttled"
	case ambiguous:
		return "ambiguous"
	case permanent:
		return "permanent"
	case unauthorized:
		return "unauthorized"
	}
	return "unknown"
}

// callError is a failed call to Dify.
type callError struct {
	kind       failure
	status     int    // HTTP status, or the status of an SSE error event
	code       string // Dify's error code
	msg        string // cleaned of secrets
	retryAfter time.Duration
	runID      string // the run the request started, if Dify said
}

func (e *callError) Error() string {
	s := e.kind.String()
	if e.status != 0 {
		s += fmt.Sprintf(": HTTP %d", e.status)
	}
	if e.code != "" {
		s += " " + e.code
	}
	if e.msg != "" {
		s += ": " + e.msg
	}
	return s
}

// runResult is a run's outcome (the blocking response's data, a
// workflow_finished event's data, or GET /workflows/run/{id}).
type runResult struct {
	ID      string
	Status  string
	Outputs map[string]any
	Error   string
	Elapsed float64
	Inputs  map[string]any
}

// decodeRun decodes a run object leniently: outputs and inputs may be
// objects or JSON strings holding objects (older Dify versions), error may
// be null or a string, times may be numbers or strings.
func decodeRun(raw []byte) (runResult, error) {
	var w struct {
		ID      string          `json:"id"`
		Status  string          `json:"status"`
		Outputs json.RawMessage `json:"outputs"`
		Inputs  json.RawMessage `json:"inputs"`
		Error   json.RawMessage `json:"error"`
		Elapsed any             `json:"elapsed_time"`
	}
	if err := json.Unmarshal(raw, &w); err != nil {
		return runResult{}, fmt.Errorf("decode run: %w", err)
	}
	r := runResult{ID: w.ID, Status: w.Status}
	r.Outputs = objectOrString(w.Outputs)
	r.Inputs = objectOrString(w.Inputs)
	var s string
	if json.Unmarshal(w.Error, &s) == nil {
		r.Error = s
	}
	switch v := w.Elapsed.(type) {
	case float64:
		r.Elapsed = v
	case string:
		r.Elapsed, _ = strconv.ParseFloat(v, 64)
	}
	return r, nil
}

// objectOrString decodes a JSON object, or a JSON string that holds one.
func objectOrString(raw json.RawMessage) map[string]any {
	var m map[string]any
	if json.Unmarshal(raw, &m) == nil {
		return m
	}
	var s string
	if json.Unmarshal(raw, &s) == nil && json.Unmarshal([]byte(s), &m) == nil {
		return m
	}
	return nil
}

// terminal reports whether a run with this status has ended.
func terminal(status string) bool {
	switch status {
	case "succeeded", "partial-succeeded", "failed", "stopped":
		return true
	}
	return false
}

// errorBody is Dify's error answer.
type errorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Status  int    `json:"status"`
}

// classify turns an HTTP error status into a failure kind.
func classify(status int) failure {
	switch {
	case status == http.StatusTooManyRequests:
		return throttled
	case status == http.StatusUnauthorized || status == http.StatusForbidden || status == http.StatusNotFound || status == http.StatusMethodNotAllowed:
		return unauthorized
	case status == http.StatusRequestTimeout || status >= 500:
		return ambiguous
	case status >= 400:
		return permanent
	}
	return ambiguous
}

// do sends a request with the API key and reports, besides the answer,
// whether a connection was ever made (if not, Dify never saw it).
func (f *Forwarder) do(ctx context.Context, method, path string, body []byte) (*http.Response, bool, error) {
	var connected atomic.Bool
	ctx = httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{
		GotConn: func(httptrace.GotConnInfo) { connected.Store(true) },
	})
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, f.base+path, rd)
	if err != nil {
		return nil, false, err
	}
	req.Header.Set("Authorization", "Bearer "+f.opts.APIKey.Reveal())
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	f.count(func(s *Stats) { s.Requests++ })
	resp, err := f.client.Do(req)
	return resp, connected.Load(), err
}

// httpError reads an error answer into a callError.
func (f *Forwarder) httpError(resp *http.Response) *callError {
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var eb errorBody
	json.Unmarshal(data, &eb)
	e := &callError{kind: classify(resp.StatusCode), status: resp.StatusCode, code: eb.Code, msg: f.clean(eb.Message)}
	if e.msg == "" && eb.Code == "" {
		e.msg = f.clean(string(bytes.TrimSpace(data)))
	}
	if ra, ok := fwd.RetryAfter(resp.Header, f.clock.Now()); ok {
		e.retryAfter = ra
	}
	return e
}

func (f *Forwarder) clean(s string) string { return fwd.Clean(s, f.opts.APIKey.Reveal()) }

// transportError classifies an error of the HTTP client.
func (f *Forwarder) transportError(err error, connected bool, runID string) *callError {
	kind := ambiguous
	if !connected {
		kind = notSent
	}
	return &callError{kind: kind, msg: f.clean(err.Error()), runID: runID}
}

// runRequest is the body of POST /workflows/run.
type runRequest struct {
	Inputs       map[string]any `json:"inputs"`
	ResponseMode string         `json:"response_mode"`
	User         string         `json:"user"`
}

// run starts a workflow run and waits for its outcome, within Timeout.
func (f *Forwarder) run(ctx context.Context, req runRequest) (runResult, *callError) {
	ctx, cancel := context.WithTimeout(ctx, f.opts.Timeout)
	defer cancel()
	body, err := json.Marshal(req)
	if err != nil {
		return runResult{}, &callError{kind: permanent, msg: "encode request: " + err.Error()}
	}
	f.count(func(s *Stats) { s.Runs++ })
	resp, connected, err := f.do(ctx, http.MethodPost, "/workflows/run", body)
	if err != nil {
		return runResult{}, f.transportError(err, connected, "")
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return runResult{}, f.httpError(resp)
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt == "text/event-stream" {
		return f.readStream(resp.Body)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxEventBytes))
	if err != nil {
		return runResult{}, f.transportError(err, true, "")
	}
	var blocking struct {
		WorkflowRunID string          `json:"workflow_run_id"`
		Data          json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal(data, &blocking); err != nil {
		return runResult{}, &callError{kind: ambiguous, status: 200, msg: "undecodable answer: " + err.Error()}
	}
	r, err := decodeRun(blocking.Data)
	if err != nil || r.Status == "" {
		return runResult{}, &callError{kind: ambiguous, status: 200, msg: "answer without a run", runID: blocking.WorkflowRunID}
	}
	if r.ID == "" {
		r.ID = blocking.WorkflowRunID
	}
	return r, nil
}

// streamEvent is one event of a streaming run.
type streamEvent struct {
	Event         string          `json:"event"`
	WorkflowRunID string          `json:"workflow_run_id"`
	Data          json.RawMessage `json:"data"`
	Status        int             `json:"status"`
	Code          string          `json:"code"`
	Message       string          `json:"message"`
}

// readStream follows a streaming run to its workflow_finished or error
// event.
func (f *Forwarder) readStream(body io.Reader) (runResult, *callError) {
	sse := newSSEReader(body)
	runID := ""
	for {
		data, err := sse.Next()
		if err != nil {
			msg := "stream ended before workflow_finished"
			if !errors.Is(err, io.EOF) {
				msg = "stream broken: " + err.Error()
			}
			return runResult{}, &callError{kind: ambiguous, status: 200, msg: f.clean(msg), runID: runID}
		}
		var ev streamEvent
		if json.Unmarshal(data, &ev) != nil {
			continue // not an event of ours; the outcome comes later or never
		}
		if ev.WorkflowRunID != "" {
			runID = ev.WorkflowRunID
		}
		switch ev.Event {
		case "workflow_finished":
			r, err := decodeRun(ev.Data)
			if err != nil || !terminal(r.Status) {
				return runResult{}, &callError{kind: ambiguous, status: 200, msg: "workflow_finished without an outcome", runID: runID}
			}
			if r.ID == "" {
				r.ID = runID
			}
			return r, nil
		case "error":
			e := &callError{kind: classify(ev.Status), status: ev.Status, code: ev.Code, msg: f.clean(ev.Message), runID: runID}
			if ev.Status == 0 {
				e.kind = ambiguous
			}
			if runID != "" && e.kind != unauthorized {
				// The run had started: whatever the error, it is the run's
				// to report. Look it up rather than run again.
				e.kind = ambiguous
			}
			return runResult{}, e
		}
	}
}

// getRun fetches GET /workflows/run/{id}; found is false for a 404.
func (f *Forwarder) getRun(ctx context.Context, id string) (r runResult, found bool, cerr *callError) {
	ctx, cancel := context.WithTimeout(ctx, f.opts.RequestTimeout)
	defer cancel()
	resp, connected, err := f.do(ctx, http.MethodGet, "/workflows/run/"+url.PathEscape(id), nil)
	if err != nil {
		return r, false, f.transportError(err, connected, id)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return r, false, nil
	}
	if resp.StatusCode != http.StatusOK {
		return r, false, f.httpError(resp)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxEventBytes))
	if err != nil {
		return r, false, f.transportError(err, true, id)
	}
	if r, err = decodeRun(data); err != nil {
		return r, false, &callError{kind: ambiguous, status: 200, msg: err.Error(), runID: id}
	}
	if r.ID == "" {
		r.ID = id
	}
	return r, true, nil
}

// logEntry is one row of GET /workflows/logs.
type logEntry struct {
	WorkflowRun struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	} `json:"workflow_run"`
}

// findRuns lists the runs whose inputs or outputs mention keyword, newest
// first as Dify returns them.
func (f *Forwarder) findRuns(ctx context.Context, keyword string) ([]logEntry, *callError) {
	ctx, cancel := context.WithTimeout(ctx, f.opts.RequestTimeout)
	defer cancel()
	f.count(func(s *Stats) { s.Lookups++ })
	q := url.Values{"keyword": {keyword}, "page": {"1"}, "limit": {"100"}}
	resp, connected, err := f.do(ctx, http.MethodGet, "/workflows/logs?"+q.Encode(), nil)
	if err != nil {
		return nil, f.transportError(err, connected, "")
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, f.httpError(resp)
	}
	var page struct {
		Data []logEntry `json:"data"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxEventBytes)).Decode(&page); err != nil {
		return nil, &callError{kind: ambiguous, status: 200, msg: "undecodable logs: " + err.Error()}
	}
	return page.Data, nil
}
