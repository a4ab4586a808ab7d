package daemon

import "net/http"

// routes serves POST /v1/events (the current generation's handler),
// GET /healthz and GET /metrics.
func (d *Daemon) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/v1/events", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.mu.Lock()
		h := d.events
		d.mu.Unlock()
		if h == nil {
			http.Error(w, `{"error":"no http source is configured"}`, http.StatusNotFound)
			return
		}
		h.ServeHTTP(w, r)
	}))
	mux.HandleFunc("GET /healthz", d.reporter.Healthz)
	mux.HandleFunc("GET /livez", d.reporter.Livez)
	mux.HandleFunc("GET /readyz", d.reporter.Readyz)
	mux.Handle("GET /metrics", d.reporter.Metrics())
	sp := d.statusPage()
	mux.Handle("GET /{$}", sp)
	mux.Handle("GET /status.json", sp)
	return mux
}
