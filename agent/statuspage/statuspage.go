// Package statuspage serves Vigil's local status page: GET / is one
// self-contained HTML file (no external assets, so it works on a device
// without internet) that polls GET /status.json, which holds the health
// snapshot, the probes, and what the page draws from the buffer: each
// stream's recent scores against its threshold, the open episodes and the
// recent alerts with their top features.
//
// The page costs little while nobody looks: Recent keeps a copy of the
// latest score and alert records as the pipeline appends them (into reused
// slots, no allocation once warm), and they are decoded only when
// /status.json is asked for, from where the previous request stopped. The
// buffer itself cannot serve this: records every consumer acknowledged are
// deleted at once.
package statuspage

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	_ "embed"
	"encoding/json"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/vigil-edge/vigil/agent/health"
	"github.com/vigil-edge/vigil/agent/record"
)

//go:embed index.html
var indexHTML []byte

// Appender is the buffer as the pipeline writes it.
type Appender interface {
	Append(ctx context.Context, lane string, data ...[]byte) ([]uint64, error)
}

// Recent holds copies of the latest records appended to the score and
// alert lanes through its Tap.
type Recent struct {
	mu             sync.Mutex
	scores, alerts ring
}

// ring is the latest len(slots) records; n counts every record added.
type ring struct {
	slots [][]byte
	n     uint64
}

func (r *ring) add(d []byte) {
	i := r.n % uint64(len(r.slots))
	r.slots[i] = append(r.slots[i][:0], d...)
	r.n++
}

// since calls f with the records numbered from on (the oldest still held
// when from is older) and returns the next number.
func (r *ring) since(from uint64, f func([]byte)) uint64 {
	if size := uint64(len(r.slots)); r.n > size && from < r.n-size {
		from = r.n - size
	}
	for ; from < r.n; from++ {
		f(r.slots[from%uint64(len(r.slots))])
	}
	return r.n
}

// NewRecent keeps the latest scores and alerts records.
func NewRecent(scores, alerts int) *Recent {
	return &Recent{scores: ring{slots: make([][]byte, max(1, scores))}, alerts: ring{slots: make([][]byte, max(1, alerts))}}
}

// Tap returns an Appender that appends to next and, once next has stored
// them, keeps copies of the score and alert records.
func (r *Recent) Tap(next Appender) Appender { return tap{r, next} }

type tap struct {
	r    *Recent
	next Appender
}

func (t tap) Append(ctx context.Context, lane string, data ...[]byte) ([]uint64, error) {
	seqs, err := t.next.Append(ctx, lane, data...)
	if err != nil || (lane != record.LaneScore && lane != record.LaneAlert) {
		return seqs, err
	}
	t.r.mu.Lock()
	rg := &t.r.scores
	if lane == record.LaneAlert {
		rg = &t.r.alerts
	}
	for _, d := range data {
		rg.add(d)
	}
	t.r.mu.Unlock()
	return seqs, nil
}

// Options configure a Page.
type Options struct {
	// Recent is where the page finds the latest scores and alerts.
	Recent *Recent
	// Health is the health snapshot; Live and Ready the probes' checks.
	Health func() health.Snapshot
	Live   func() []health.Check
	Ready  func() []health.Check
	// Broker is the MQTT connection's state (nil: unknown).
	Broker func() health.Broker
	// Lanes are the lanes' byte caps; MaxBytes the cap on all lanes.
	Lanes    map[string]health.Lane
	MaxBytes int64
	// Token, when set, is required: as ?token= on the page (which then
	// sets a cookie for its polls) or as Authorization: Bearer.
	Token string
	// Points is how many recent scores each stream's chart keeps
	// (default 240); Alerts how many recent alerts the page lists
	// (default 20).
	Points, Alerts int
}

// Page serves the status page and its JSON.
type Page struct {
	o     Options
	token [32]byte

	mu             sync.Mutex
	scoreN, alertN uint64 // the next records of Recent to read
	points         map[string][]Point
	alerts         []Alert          // newest last
	open           map[string]Alert // by episode
}

// Point is one score: time (Unix ms), score and threshold.
type Point [3]float64

// Alert is what the page shows of an alert.
type Alert struct {
	ID          string           `json:"id"`
	TS          time.Time        `json:"ts"`
	Stream      string           `json:"stream"`
	Key         string           `json:"key,omitempty"`
	Score       float64          `json:"score"`
	Threshold   float64          `json:"threshold"`
	Severity    string           `json:"severity"`
	Episode     string           `json:"episode"`
	State       string           `json:"state"`
	Update      int              `json:"update"`
	Since       time.Time        `json:"since"` // the episode's first alert
	TopFeatures []record.Feature `json:"top_features"`
	// Reason says why an alert no window's score raised was raised (a
	// stuck sensor, an episode closed after a restart or an eviction).
	Reason string `json:"reason,omitempty"`
}

// Status is the body of GET /status.json.
type Status struct {
	Health   health.Snapshot        `json:"health"`
	Live     []health.Check         `json:"live"`
	Ready    []health.Check         `json:"ready"`
	Broker   *health.Broker         `json:"broker,omitempty"`
	Lanes    map[string]health.Lane `json:"lanes"`
	MaxBytes int64                  `json:"max_bytes"`
	Points   map[string][]Point     `json:"points"`
	Open     []Alert                `json:"open_episodes"`
	Alerts   []Alert                `json:"alerts"` // newest first
}

// New returns a Page.
func New(o Options) *Page {
	if o.Points <= 0 {
		o.Points = 240
	}
	if o.Alerts <= 0 {
		o.Alerts = 20
	}
	p := &Page{o: o, points: map[string][]Point{}, open: map[string]Alert{}}
	if o.Token != "" {
		p.token = sha256.Sum256([]byte(o.Token))
	}
	return p
}

const cookieName = "vigil_token"

// authorized reports whether r carries the token (always true without one).
func (p *Page) authorized(r *http.Request) (ok bool, fromQuery bool) {
	if p.o.Token == "" {
		return true, false
	}
	match := func(s string) bool {
		sum := sha256.Sum256([]byte(s))
		return s != "" && subtle.ConstantTimeCompare(sum[:], p.token[:]) == 1
	}
	if t, found := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); found && match(t) {
		return true, false
	}
	if c, err := r.Cookie(cookieName); err == nil && match(c.Value) {
		return true, false
	}
	if match(r.URL.Query().Get("token")) {
		return true, true
	}
	return false, false
}

// ServeHTTP serves GET / (the page) and GET /status.json.
func (p *Page) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ok, fromQuery := p.authorized(r)
	if !ok {
		w.Header().Set("WWW-Authenticate", `Bearer realm="vigil"`)
		if r.URL.Path == "/status.json" {
			http.Error(w, `{"error":"http.token is set: send Authorization: Bearer <token>"}`, http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(loginHTML))
		return
	}
	if fromQuery {
		// Keep the token out of the address bar and the history: a cookie
		// for this origin carries it from now on.
		http.SetCookie(w, &http.Cookie{Name: cookieName, Value: p.o.Token, Path: "/", HttpOnly: true, SameSite: http.SameSiteStrictMode})
		http.Redirect(w, r, "/", http.StatusSeeOther)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	switch r.URL.Path {
	case "/status.json":
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(p.Status())
	default:
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:")
		w.Write(indexHTML)
	}
}

const loginHTML = `<!doctype html><meta charset="utf-8"><title>Vigil: token required</title>
<style>body{font:16px system-ui,sans-serif;margin:3em;color:#222}input{font:inherit;padding:.3em}</style>
<h1>Vigil</h1><p>This device's status page needs its <code>http.token</code>.</p>
<form method="get" action="/"><input type="password" name="token" placeholder="token" autofocus> <button>Open</button></form>`

// Status reads what the buffer got since the previous call and returns the
// page's data.
func (p *Page) Status() Status {
	s := Status{Lanes: p.o.Lanes, MaxBytes: p.o.MaxBytes}
	if p.o.Health != nil {
		s.Health = p.o.Health()
	}
	if p.o.Live != nil {
		s.Live = p.o.Live()
	}
	if p.o.Ready != nil {
		s.Ready = p.o.Ready()
	}
	if p.o.Broker != nil {
		b := p.o.Broker()
		s.Broker = &b
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tail()
	s.Points = make(map[string][]Point, len(p.points))
	for k, v := range p.points {
		s.Points[k] = append([]Point(nil), v...)
	}
	for _, a := range p.open {
		s.Open = append(s.Open, a)
	}
	sort.Slice(s.Open, func(i, j int) bool { return s.Open[i].Since.Before(s.Open[j].Since) })
	for i := len(p.alerts) - 1; i >= 0; i-- {
		s.Alerts = append(s.Alerts, p.alerts[i])
	}
	return s
}

func (p *Page) tail() {
	r := p.o.Recent
	if r == nil {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	p.scoreN = r.scores.since(p.scoreN, p.addScore)
	p.alertN = r.alerts.since(p.alertN, p.addAlert)
}

func (p *Page) addScore(b []byte) {
	var s record.Score
	if json.Unmarshal(b, &s) != nil || s.Stream == "" {
		return
	}
	pts := append(p.points[s.Stream], Point{float64(s.TS.UnixMilli()), s.Score, s.Threshold})
	if len(pts) > p.o.Points {
		pts = append(pts[:0], pts[len(pts)-p.o.Points:]...)
	}
	p.points[s.Stream] = pts
}

func (p *Page) addAlert(b []byte) {
	var a record.Alert
	if json.Unmarshal(b, &a) != nil || a.Stream == "" {
		return
	}
	v := Alert{ID: a.ID, TS: a.TS, Stream: a.Stream, Key: a.Key, Score: a.Score, Threshold: a.Threshold,
		Severity: a.Severity, Episode: a.Episode, State: a.State, Update: a.Update, Since: a.TS, TopFeatures: a.TopFeatures, Reason: a.Reason}
	if prev, ok := p.open[a.Episode]; ok {
		v.Since = prev.Since
	}
	if a.State == "closed" {
		delete(p.open, a.Episode)
	} else {
		p.open[a.Episode] = v
	}
	p.alerts = append(p.alerts, v)
	if len(p.alerts) > p.o.Alerts {
		p.alerts = append(p.alerts[:0], p.alerts[len(p.alerts)-p.o.Alerts:]...)
	}
}
