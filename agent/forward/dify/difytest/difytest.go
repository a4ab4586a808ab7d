// Package difytest is a local double of a Dify workflow app's service API
// that follows ../shared/contracts/dify.md strictly: Bearer auth (401 with
// WWW-Authenticate and {"code":"unauthorized"}), body validation (400
// invalid_param), POST /workflows/run in blocking and streaming mode with
// the exact answer shapes, GET /workflows/run/{id}, GET
// /workflows/logs?keyword= over the recorded runs, and POST
// /workflows/tasks/{id}/stop. It records every request and every run, and
// injects failures: 429 with Retry-After, 5xx before or after the run, failed
// and stopped runs, SSE error events (429 inside a 200 stream too), timeouts
// after the run was recorded, connection resets before or after recording,
// and runs that stay running for a while.
//
// The base URL to give a client is Server.URL + "/v1".
package difytest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vigil-edge/vigil/agent/internal/testkit"
)

// Options configures a Server.
type Options struct {
	// APIKey is the one key accepted. Required.
	APIKey string
	// Outputs computes a successful run's outputs from its inputs; nil
	// gives {"advice": ..., "summary": ...} mentioning the alert id.
	Outputs func(inputs map[string]any) map[string]any
	// RequiredInputs must be present and non-empty in every run's inputs;
	// nil means ["alert_id"].
	RequiredInputs []string
	// Now is the server's clock; nil means time.Now.
	Now func() time.Time
	// CRLF ends the stream's lines with \r\n instead of \n.
	CRLF bool
	// SplitData spreads each event's JSON over several data: lines.
	SplitData bool
	// AfterRecord, if set, is called after a run was recorded and before
	// the answer is written (a test can kill the client there).
	AfterRecord func(Run)
}

// StreamError is an SSE error event in a 200 stream.
type StreamError struct {
	Status        int
	Code, Message string
	// AfterStart sends it after workflow_started: the run exists and is
	// recorded as failed. Otherwise no run is recorded.
	AfterStart bool
}

// Fault is a forced behaviour for one POST /workflows/run (Script) or one
// request of any kind (SetFaultFunc).
type Fault struct {
	// Status answers this HTTP status with Dify's error body (Code and
	// Message, or the usual ones for the status).
	Status        int
	Code, Message string
	RetryAfter    string
	// AfterRecord records the run (succeeded) before answering Status: the
	// run happened although the client sees an error.
	AfterRecord bool
	// RunStatus ends the run with this status ("failed", "stopped") and
	// RunError; the answer is a normal 200.
	RunStatus, RunError string
	// StreamError sends an error event (streaming mode only).
	StreamError *StreamError
	// Hang records the run, then answers nothing (streaming: only
	// workflow_started) until the client gives up.
	Hang bool
	// ResetBefore closes the connection before recording the run;
	// ResetAfter records the run, then closes the connection.
	ResetBefore, ResetAfter bool
	// Running keeps the run "running" for this many GETs of it (with Hang,
	// or with AfterRecord).
	Running int
}

// Run is a recorded workflow run.
type Run struct {
	ID, TaskID string
	AlertID    string
	Inputs     map[string]any
	User       string
	Mode       string
	Status     string
	Outputs    map[string]any
	Error      string
	CreatedAt  time.Time
	FinishedAt time.Time

	pollsLeft int
	final     string
}

// Request is one request the server received.
type Request struct {
	N int
	// At is when it arrived, by Options.Now.
	At     time.Time
	Method string
	Path   string
	Query  string
	Header http.Header
	Body   []byte
	// Status is the status answered; 0 for a hang or a reset.
	Status int
}

// Server is a running double. Its methods are safe for concurrent use.
type Server struct {
	// FaultServer holds URL, the server's root (the API base is URL +
	// "/v1"), the requests and the script of faults; the script serves
	// POST /workflows/run only.
	testkit.FaultServer[Request, Fault]

	opts Options

	mu   sync.Mutex
	runs []*Run
	byID map[string]*Run
	seq  int
}

// NewServer starts a double on a loopback port.
func NewServer(opts Options) *Server {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.RequiredInputs == nil {
		opts.RequiredInputs = []string{"alert_id"}
	}
	if opts.Outputs == nil {
		opts.Outputs = func(in map[string]any) map[string]any {
			return map[string]any{
				"advice":  fmt.Sprintf("Inspect the pump for alert %v: check the bearing temperature first.", in["alert_id"]),
				"summary": fmt.Sprintf("anomaly %v", in["alert_id"]),
			}
		}
	}
	s := &Server{opts: opts, byID: map[string]*Run{}}
	s.Start(s)
	return s
}

// BaseURL is the API base to configure a client with.
func (s *Server) BaseURL() string { return s.URL + "/v1" }

// Runs returns copies of the recorded runs, oldest first.
func (s *Server) Runs() []Run {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Run, len(s.runs))
	for i, r := range s.runs {
		out[i] = *r
	}
	return out
}

// RunsFor returns the runs recorded for an alert id.
func (s *Server) RunsFor(alertID string) []Run {
	var out []Run
	for _, r := range s.Runs() {
		if r.AlertID == alertID {
			out = append(out, r)
		}
	}
	return out
}

// Succeeded counts the successful runs per alert id.
func (s *Server) Succeeded() map[string]int {
	m := map[string]int{}
	for _, r := range s.Runs() {
		if r.Status == "succeeded" {
			m[r.AlertID]++
		}
	}
	return m
}

// ServeHTTP answers one request.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 10<<20))
	path := strings.TrimPrefix(r.URL.Path, "/v1")
	isRun := r.Method == http.MethodPost && path == "/workflows/run"
	n, fault := s.Receive(func(n int) Request {
		return Request{N: n, At: s.opts.Now(), Method: r.Method, Path: path, Query: r.URL.RawQuery, Header: r.Header.Clone(), Body: body}
	}, isRun, nil)
	status := s.serve(w, r, path, body, fault)
	s.Answered(n, func(req *Request) { req.Status = status })
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request, path string, body []byte, fault *Fault) int {
	if st := s.auth(w, r); st != 0 {
		return st
	}
	if fault != nil && fault.ResetBefore {
		testkit.ResetConn(w)
		return 0
	}
	if fault != nil && fault.Status != 0 && !fault.AfterRecord && (r.Method != http.MethodPost || path != "/workflows/run") {
		return s.errorReply(w, fault)
	}
	switch {
	case r.Method == http.MethodPost && path == "/workflows/run":
		return s.runWorkflow(w, r, body, fault)
	case r.Method == http.MethodGet && path == "/workflows/logs":
		return s.logs(w, r)
	case r.Method == http.MethodGet && strings.HasPrefix(path, "/workflows/run/"):
		return s.getRun(w, strings.TrimPrefix(path, "/workflows/run/"))
	case r.Method == http.MethodPost && strings.HasPrefix(path, "/workflows/tasks/") && strings.HasSuffix(path, "/stop"):
		return testkit.ReplyJSON(w, 200, map[string]any{"result": "success"})
	}
	return testkit.ReplyJSON(w, 404, map[string]any{"code": "not_found", "message": "The requested URL was not found on the server.", "status": 404})
}

// auth checks the Bearer key.
func (s *Server) auth(w http.ResponseWriter, r *http.Request) int {
	h := r.Header.Get("Authorization")
	scheme, key, ok := strings.Cut(h, " ")
	if !ok || scheme != "Bearer" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="api"`)
		return testkit.ReplyJSON(w, 401, map[string]any{"code": "unauthorized", "message": "Authorization header must be provided and start with 'Bearer'", "status": 401})
	}
	if key != s.opts.APIKey {
		w.Header().Set("WWW-Authenticate", `Bearer realm="api"`)
		return testkit.ReplyJSON(w, 401, map[string]any{"code": "unauthorized", "message": "Access token is invalid", "status": 401})
	}
	return 0
}

func invalid(w http.ResponseWriter, msg string) int {
	return testkit.ReplyJSON(w, 400, map[string]any{"code": "invalid_param", "message": msg, "status": 400})
}

// runWorkflow validates and answers POST /workflows/run.
func (s *Server) runWorkflow(w http.ResponseWriter, r *http.Request, body []byte, fault *Fault) int {
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		return invalid(w, "Content-Type must be application/json")
	}
	var req struct {
		Inputs       json.RawMessage `json:"inputs"`
		ResponseMode *string         `json:"response_mode"`
		User         *string         `json:"user"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return invalid(w, "Failed to decode JSON object: "+err.Error())
	}
	var inputs map[string]any
	if len(req.Inputs) == 0 || json.Unmarshal(req.Inputs, &inputs) != nil || inputs == nil {
		return invalid(w, "inputs is required and must be an object")
	}
	if req.ResponseMode == nil || (*req.ResponseMode != "blocking" && *req.ResponseMode != "streaming") {
		return invalid(w, "response_mode must be blocking or streaming")
	}
	if req.User == nil || *req.User == "" {
		return invalid(w, "user is required")
	}
	for _, k := range s.opts.RequiredInputs {
		if v, ok := inputs[k]; !ok || v == nil || v == "" {
			return invalid(w, k+" is required in input form")
		}
	}
	for k, v := range inputs {
		switch v.(type) {
		case string, float64, bool:
		default:
			return invalid(w, k+" must be a string, number or boolean")
		}
	}
	mode := *req.ResponseMode
	f := Fault{}
	if fault != nil {
		f = *fault
	}
	if f.Status != 0 && !f.AfterRecord {
		return s.errorReply(w, &f)
	}
	if f.StreamError != nil && mode == "streaming" && !f.StreamError.AfterStart {
		return s.stream(w, r, nil, f.StreamError, false)
	}
	run := s.record(inputs, *req.User, mode, f)
	if s.opts.AfterRecord != nil {
		s.opts.AfterRecord(*run)
	}
	switch {
	case f.Status != 0:
		return s.errorReply(w, &f)
	case f.ResetAfter:
		testkit.ResetConn(w)
		return 0
	case f.Hang:
		if mode == "streaming" {
			return s.stream(w, r, run, nil, true)
		}
		s.Hang(r)
		return 0
	case mode == "streaming":
		return s.stream(w, r, run, f.StreamError, false)
	}
	return testkit.ReplyJSON(w, 200, map[string]any{"workflow_run_id": run.ID, "task_id": run.TaskID, "data": s.runData(run)})
}

// record stores a new run with the outcome the fault says.
func (s *Server) record(inputs map[string]any, user, mode string, f Fault) *Run {
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	run := &Run{
		ID: fmt.Sprintf("run-%04d-%x", s.seq, now.UnixNano()&0xffffff), TaskID: fmt.Sprintf("task-%04d", s.seq),
		AlertID: fmt.Sprint(inputs["alert_id"]), Inputs: inputs, User: user, Mode: mode,
		Status: "succeeded", CreatedAt: now, FinishedAt: now,
	}
	switch {
	case f.RunStatus != "":
		run.Status, run.Error = f.RunStatus, f.RunError
		if run.Error == "" {
			run.Error = "node llm failed: model timeout"
		}
	case f.StreamError != nil && f.StreamError.AfterStart:
		run.Status, run.Error = "failed", f.StreamError.Message
	default:
		run.Outputs = s.opts.Outputs(inputs)
	}
	if f.Running > 0 {
		run.final, run.Status, run.pollsLeft = run.Status, "running", f.Running
	}
	s.runs = append(s.runs, run)
	s.byID[run.ID] = run
	return run
}

// runData is the blocking answer's data (and workflow_finished's, and
// GET /workflows/run/{id}'s) for a run.
func (s *Server) runData(run *Run) map[string]any {
	var errv any
	if run.Error != "" {
		errv = run.Error
	}
	var outputs any = run.Outputs
	if run.Outputs == nil {
		outputs = map[string]any{}
	}
	return map[string]any{
		"id": run.ID, "workflow_id": "wf-vigil-advice", "status": run.Status, "outputs": outputs,
		"error": errv, "elapsed_time": 1.23, "total_tokens": 456, "total_steps": 3,
		"created_at": run.CreatedAt.Unix(), "finished_at": run.FinishedAt.Unix(),
	}
}

// stream answers in streaming mode. A nil run sends only the error event
// (the run was refused); hang stops after workflow_started.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, run *Run, serr *StreamError, hang bool) int {
	fl, _ := w.(http.Flusher)
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-cache")
	w.WriteHeader(200)
	nl := "\n"
	if s.opts.CRLF {
		nl = "\r\n"
	}
	send := func(v any) {
		b, _ := json.Marshal(v)
		var out bytes.Buffer
		if s.opts.SplitData {
			for _, p := range splitJSON(b) {
				out.WriteString("data: " + p + nl)
			}
		} else {
			out.WriteString("data: " + string(b) + nl)
		}
		out.WriteString(nl)
		w.Write(out.Bytes())
		if fl != nil {
			fl.Flush()
		}
	}
	if run == nil {
		send(map[string]any{"event": "error", "task_id": "", "status": serr.Status, "code": serr.Code, "message": serr.Message})
		return 200
	}
	base := func(event string) map[string]any {
		return map[string]any{"event": event, "task_id": run.TaskID, "workflow_run_id": run.ID}
	}
	ev := base("workflow_started")
	ev["data"] = map[string]any{"id": run.ID, "workflow_id": "wf-vigil-advice", "sequence_number": 1, "created_at": run.CreatedAt.Unix()}
	send(ev)
	if hang {
		s.Hang(r)
		return 0
	}
	io.WriteString(w, "event: ping"+nl+nl)
	ev = base("node_started")
	ev["data"] = map[string]any{"id": "ne-1", "node_id": "start", "node_type": "start", "title": "Start", "index": 1, "created_at": run.CreatedAt.Unix()}
	send(ev)
	if serr != nil {
		send(map[string]any{"event": "error", "task_id": run.TaskID, "status": serr.Status, "code": serr.Code, "message": serr.Message})
		return 200
	}
	ev = base("text_chunk")
	ev["data"] = map[string]any{"text": "Inspect the pump", "from_variable_selector": []string{"llm", "text"}}
	send(ev)
	ev = base("node_finished")
	ev["data"] = map[string]any{"id": "ne-1", "node_id": "llm", "status": "succeeded", "index": 2}
	send(ev)
	ev = base("workflow_finished")
	ev["data"] = s.runData(run)
	send(ev)
	return 200
}

// errorReply answers a fault's status with Dify's error body.
func (s *Server) errorReply(w http.ResponseWriter, f *Fault) int {
	code, msg := f.Code, f.Message
	if code == "" {
		switch f.Status {
		case 400:
			code, msg = "invalid_param", "invalid parameter"
		case 401:
			code, msg = "unauthorized", "Access token is invalid"
			w.Header().Set("WWW-Authenticate", `Bearer realm="api"`)
		case 429:
			code, msg = "too_many_requests", "Too many requests. Please try again later."
		default:
			code, msg = "unknown", "Internal Server Error"
		}
	}
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	return testkit.ReplyJSON(w, f.Status, map[string]any{"code": code, "message": msg, "status": f.Status})
}

// getRun answers GET /workflows/run/{id}.
func (s *Server) getRun(w http.ResponseWriter, id string) int {
	s.mu.Lock()
	run, ok := s.byID[id]
	var data map[string]any
	if ok {
		if run.pollsLeft > 0 {
			run.pollsLeft--
		} else if run.final != "" {
			run.Status, run.final = run.final, ""
		}
		data = s.runData(run)
		data["inputs"] = run.Inputs
	}
	s.mu.Unlock()
	if !ok {
		return testkit.ReplyJSON(w, 404, map[string]any{"code": "not_found", "message": "Workflow run not found", "status": 404})
	}
	return testkit.ReplyJSON(w, 200, data)
}

// logs answers GET /workflows/logs: runs whose inputs or outputs contain
// the keyword, newest first, paginated.
func (s *Server) logs(w http.ResponseWriter, r *http.Request) int {
	q := r.URL.Query()
	keyword, status := q.Get("keyword"), q.Get("status")
	page, _ := strconv.Atoi(q.Get("page"))
	limit, _ := strconv.Atoi(q.Get("limit"))
	if page < 1 {
		page = 1
	}
	if limit < 1 || limit > 100 {
		limit = 20
	}
	s.mu.Lock()
	var hits []map[string]any
	runs := append([]*Run(nil), s.runs...)
	sort.SliceStable(runs, func(i, j int) bool { return runs[i].CreatedAt.After(runs[j].CreatedAt) })
	for _, run := range runs {
		in, _ := json.Marshal(run.Inputs)
		out, _ := json.Marshal(run.Outputs)
		if keyword != "" && !strings.Contains(string(in), keyword) && !strings.Contains(string(out), keyword) {
			continue
		}
		if status != "" && run.Status != status {
			continue
		}
		var errv any
		if run.Error != "" {
			errv = run.Error
		}
		hits = append(hits, map[string]any{
			"id": "log-" + run.ID,
			"workflow_run": map[string]any{
				"id": run.ID, "version": "2025-01-01 00:00:00", "status": run.Status, "error": errv,
				"elapsed_time": 1.23, "total_tokens": 456, "total_steps": 3,
				"created_at": run.CreatedAt.Unix(), "finished_at": run.FinishedAt.Unix(), "exceptions_count": 0,
			},
			"created_from": "service-api", "created_by_role": "end_user", "created_by_account": nil,
			"created_by_end_user": map[string]any{"id": "eu-1", "type": "service_api", "is_anonymous": false, "session_id": run.User},
			"created_at":          run.CreatedAt.Unix(),
		})
	}
	s.mu.Unlock()
	total := len(hits)
	from := min((page-1)*limit, total)
	to := min(from+limit, total)
	data := hits[from:to]
	if data == nil {
		data = []map[string]any{}
	}
	return testkit.ReplyJSON(w, 200, map[string]any{"page": page, "limit": limit, "total": total, "has_more": to < total, "data": data})
}

// splitJSON cuts a JSON text after each comma outside strings, so that the
// pieces, joined with newlines as SSE joins data lines, are the same JSON.
func splitJSON(b []byte) []string {
	var parts []string
	inStr, esc, from := false, false, 0
	for i, c := range b {
		switch {
		case esc:
			esc = false
		case inStr && c == '\\':
			esc = true
		case c == '"':
			inStr = !inStr
		case !inStr && c == ',':
			parts = append(parts, string(b[from:i+1]))
			from = i + 1
		}
	}
	return append(parts, string(b[from:]))
}
