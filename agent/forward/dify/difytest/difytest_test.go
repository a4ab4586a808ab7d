package difytest

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

const key = "app-key-123"

func do(t *testing.T, method, url, auth, body string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func TestContract(t *testing.T) {
	s := NewServer(Options{APIKey: key})
	defer s.Close()
	run := s.BaseURL() + "/workflows/run"
	bearer := "Bearer " + key
	for _, tc := range []struct {
		name, auth, body string
		status           int
		want             string
	}{
		{"no auth", "", `{}`, 401, `"code":"unauthorized"`},
		{"wrong key", "Bearer nope", `{}`, 401, `"code":"unauthorized"`},
		{"not bearer", "Basic " + key, `{}`, 401, `"code":"unauthorized"`},
		{"bad json", bearer, `{`, 400, `"code":"invalid_param"`},
		{"no inputs", bearer, `{"response_mode":"blocking","user":"u"}`, 400, `inputs`},
		{"bad mode", bearer, `{"inputs":{"alert_id":"a"},"response_mode":"async","user":"u"}`, 400, `response_mode`},
		{"no user", bearer, `{"inputs":{"alert_id":"a"},"response_mode":"blocking"}`, 400, `user`},
		{"missing input", bearer, `{"inputs":{},"response_mode":"blocking","user":"u"}`, 400, `alert_id is required`},
		{"object input", bearer, `{"inputs":{"alert_id":"a","x":{}},"response_mode":"blocking","user":"u"}`, 400, `invalid_param`},
		{"blocking", bearer, `{"inputs":{"alert_id":"a-1"},"response_mode":"blocking","user":"u"}`, 200, `"status":"succeeded"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := do(t, "POST", run, tc.auth, tc.body)
			if resp.StatusCode != tc.status || !strings.Contains(body, tc.want) {
				t.Errorf("%d %s, want %d with %s", resp.StatusCode, body, tc.status, tc.want)
			}
			if tc.status == 401 && resp.Header.Get("WWW-Authenticate") != `Bearer realm="api"` {
				t.Errorf("WWW-Authenticate %q", resp.Header.Get("WWW-Authenticate"))
			}
		})
	}
	var blocking struct {
		WorkflowRunID string `json:"workflow_run_id"`
		TaskID        string `json:"task_id"`
		Data          struct {
			ID, WorkflowID, Status string
			Outputs                map[string]any `json:"outputs"`
			Error                  any            `json:"error"`
			ElapsedTime            float64        `json:"elapsed_time"`
			TotalTokens            int            `json:"total_tokens"`
			TotalSteps             int            `json:"total_steps"`
			CreatedAt              int64          `json:"created_at"`
			FinishedAt             int64          `json:"finished_at"`
		} `json:"data"`
	}
	_, body := do(t, "POST", run, bearer, `{"inputs":{"alert_id":"a-2"},"response_mode":"blocking","user":"u"}`)
	if err := json.Unmarshal([]byte(body), &blocking); err != nil || blocking.WorkflowRunID == "" || blocking.TaskID == "" ||
		blocking.Data.ID != blocking.WorkflowRunID || blocking.Data.Outputs["advice"] == nil || blocking.Data.Error != nil || blocking.Data.CreatedAt == 0 {
		t.Errorf("blocking answer %s", body)
	}
	// The run is found by its alert id and fetched by its id.
	_, logs := do(t, "GET", s.BaseURL()+"/workflows/logs?keyword=a-2", bearer, "")
	if !strings.Contains(logs, blocking.WorkflowRunID) || strings.Count(logs, `"workflow_run"`) != 1 || !strings.Contains(logs, `"total":1`) {
		t.Errorf("logs %s", logs)
	}
	resp, detail := do(t, "GET", s.BaseURL()+"/workflows/run/"+blocking.WorkflowRunID, bearer, "")
	if resp.StatusCode != 200 || !strings.Contains(detail, `"inputs":{"alert_id":"a-2"}`) {
		t.Errorf("run detail %d %s", resp.StatusCode, detail)
	}
	if resp, _ := do(t, "GET", s.BaseURL()+"/workflows/run/nope", bearer, ""); resp.StatusCode != 404 {
		t.Errorf("unknown run: %d", resp.StatusCode)
	}
	if got := s.Succeeded(); got["a-1"] != 1 || got["a-2"] != 1 || len(got) != 2 {
		t.Errorf("succeeded %v", got)
	}
}

func TestStreaming(t *testing.T) {
	s := NewServer(Options{APIKey: key, CRLF: true})
	defer s.Close()
	s.Script(Fault{}, Fault{StreamError: &StreamError{Status: 429, Code: "too_many_requests", Message: "busy"}})
	req := `{"inputs":{"alert_id":"a-1"},"response_mode":"streaming","user":"u"}`
	resp, body := do(t, "POST", s.BaseURL()+"/workflows/run", "Bearer "+key, req)
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	for _, ev := range []string{"workflow_started", "node_started", "text_chunk", "node_finished", "workflow_finished"} {
		if !strings.Contains(body, `"event":"`+ev+`"`) {
			t.Errorf("no %s event in %q", ev, body)
		}
	}
	if !strings.Contains(body, "event: ping\r\n\r\n") || strings.Contains(strings.ReplaceAll(body, "\r\n", ""), "\n") {
		t.Errorf("want CRLF lines and a ping: %q", body)
	}
	resp, body = do(t, "POST", s.BaseURL()+"/workflows/run", "Bearer "+key, req)
	if resp.StatusCode != 200 || !strings.Contains(body, `"event":"error"`) || !strings.Contains(body, `"status":429`) || strings.Contains(body, "workflow_started") {
		t.Errorf("429 in the stream: %d %q", resp.StatusCode, body)
	}
	if n := len(s.Runs()); n != 1 {
		t.Errorf("%d runs, want 1 (the refused one is not a run)", n)
	}
}

func TestSplitJSON(t *testing.T) {
	in := `{"a":"x, y","b":[1,2],"c":"q\",r"}`
	parts := splitJSON([]byte(in))
	if len(parts) != 4 || strings.Join(parts, "") != in {
		t.Errorf("parts %q", parts)
	}
	var v any
	if err := json.Unmarshal([]byte(strings.Join(parts, "\n")), &v); err != nil {
		t.Errorf("joined with newlines: %v", err)
	}
}

func TestRunningThenDone(t *testing.T) {
	s := NewServer(Options{APIKey: key})
	defer s.Close()
	s.Script(Fault{AfterRecord: true, Status: 500, Running: 2})
	resp, _ := do(t, "POST", s.BaseURL()+"/workflows/run", "Bearer "+key, `{"inputs":{"alert_id":"a-1"},"response_mode":"blocking","user":"u"}`)
	if resp.StatusCode != 500 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	id := s.Runs()[0].ID
	var statuses []string
	for range 3 {
		_, body := do(t, "GET", s.BaseURL()+"/workflows/run/"+id, "Bearer "+key, "")
		var r struct{ Status string }
		json.Unmarshal([]byte(body), &r)
		statuses = append(statuses, r.Status)
	}
	if strings.Join(statuses, ",") != "running,running,succeeded" {
		t.Errorf("statuses %v", statuses)
	}
}
