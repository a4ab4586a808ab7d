package dify

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"text/template"
	"time"

	"github.com/vigil-edge/vigil/agent/forward"
	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/agent/secret"
)

// Options configures a Forwarder. Start from DefaultOptions.
type Options struct {
	// BaseURL is the API base, e.g. https://api.dify.ai/v1 or
	// http://dify.local/v1.
	BaseURL string
	// APIKey is the workflow app's key. It is a secret: it goes into the
	// Authorization header and nowhere else.
	APIKey secret.Secret
	// ResponseMode is ModeBlocking or ModeStreaming.
	ResponseMode string
	// User is the end-user id sent with each run; empty means
	// "vigil-<alert's device>".
	User string
	// Inputs maps workflow inputs to text/templates over TemplateData,
	// with TemplateFuncs. The input alert_id
	// (the alert's id) is always sent, whatever the templates say.
	Inputs map[string]string
	// MinSeverity is the lowest alert severity sent: warning, major or
	// critical. Alerts below it are acknowledged and counted as Skipped.
	MinSeverity string
	// MinConfidence, when above 0, also skips alerts whose confidence is
	// below it or unknown (record.Alert.ConfidentEnough), as Skipped.
	MinConfidence float64
	// Timeout bounds one run request (blocking answer or whole stream).
	Timeout time.Duration
	// RequestTimeout bounds a lookup (logs, run status).
	RequestTimeout time.Duration
	// RateLimit is the most runs per period for the whole device; a zero
	// Count means unlimited. Alerts wait for their turn; none is dropped.
	RateLimit Rate
	// Burst is the token bucket's size; 0 means RateLimit.Count.
	Burst int
	// Cooldown is the least time, by the alerts' own timestamps, between
	// two runs for one stream; alerts inside it are acknowledged unsent and
	// counted. 0 disables it.
	Cooldown time.Duration
	// MaxConcurrency is the most alerts handled at once.
	MaxConcurrency int
	// MaxPending is the most alerts taken from the buffer and not yet done.
	MaxPending int
	// Backoff paces retries (429, failures before sending, ambiguous
	// failures, lookups).
	Backoff forward.Backoff
	// FailingRetry is how long the forwarder waits after a 401 (or 403,
	// 404) before trying again.
	FailingRetry time.Duration
	// LookupGrace: when a lookup after an ambiguous failure finds no run,
	// the forwarder looks again LookupGrace after the failure before it runs
	// the workflow, in case Dify was slow to log the run.
	LookupGrace time.Duration
	// PollInterval is how often a run found running is polled; PollTimeout
	// is when the forwarder stops waiting for it and stores a failed advice
	// (it never starts a second run).
	PollInterval, PollTimeout time.Duration
	// ShutdownGrace: when Run's context ends, the alerts being handled get
	// this long to finish (the run's answer, the advice, the journal's done
	// entry), so that a clean stop leaves nothing for the next start to look
	// up; alerts taken but not started are left for it. 0 stops at once (a
	// crash is always safe: the journal resumes).
	ShutdownGrace time.Duration
	// Deps: dead letters, the HTTP client (default: a client whose
	// timeouts come from Timeout and RequestTimeout), the clock and the
	// logger.
	forward.Deps
}

// DefaultOptions returns the defaults: Dify Cloud, blocking mode, the
// default inputs of the configuration (alert_id and a summary), alerts from
// major up, a 100 s run timeout, 15 s lookups, 6 runs a minute, a 5 min
// cooldown per stream, 2 runs at once, backoff from 1 s to 5 min, 5 min
// between tries when failing, a 30 s lookup grace, and runs found running
// polled every 5 s for up to 10 min, and 5 s at a stop for the alerts being
// handled. APIKey has no default.
func DefaultOptions() Options {
	return Options{
		BaseURL:        "https://api.dify.ai/v1",
		ResponseMode:   ModeBlocking,
		Inputs:         DefaultInputs(),
		MinSeverity:    record.SeverityMajor,
		Timeout:        100 * time.Second,
		RequestTimeout: 15 * time.Second,
		RateLimit:      Rate{Count: 6, Per: time.Minute},
		Cooldown:       5 * time.Minute,
		MaxConcurrency: 2,
		MaxPending:     64,
		Backoff:        forward.Backoff{Initial: time.Second, Max: 5 * time.Minute},
		FailingRetry:   5 * time.Minute,
		LookupGrace:    30 * time.Second,
		PollInterval:   5 * time.Second,
		PollTimeout:    10 * time.Minute,
		ShutdownGrace:  5 * time.Second,
	}
}

// validate reports every problem with o at once, naming each field, and
// parses the input templates. It never includes the API key.
func (o *Options) validate() (map[string]*template.Template, error) {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("Options.%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if u, err := url.Parse(o.BaseURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		bad("BaseURL", "want an http or https URL, got %q", o.BaseURL)
	}
	if o.APIKey == "" {
		bad("APIKey", "required")
	}
	if o.ResponseMode != ModeBlocking && o.ResponseMode != ModeStreaming {
		bad("ResponseMode", "want %s or %s, got %q", ModeBlocking, ModeStreaming, o.ResponseMode)
	}
	if strings.ContainsFunc(o.User, func(r rune) bool { return r < ' ' }) {
		bad("User", "has control characters")
	}
	tmpls, err := ParseInputs(o.Inputs)
	if err != nil {
		bad("Inputs", "%v", err)
	}
	if record.SeverityRank(o.MinSeverity) == 0 {
		bad("MinSeverity", "want warning, major or critical, got %q", o.MinSeverity)
	}
	if !(o.MinConfidence >= 0 && o.MinConfidence <= 1) {
		bad("MinConfidence", "want a value in [0, 1], got %v", o.MinConfidence)
	}
	for name, d := range map[string]time.Duration{
		"Timeout": o.Timeout, "RequestTimeout": o.RequestTimeout, "FailingRetry": o.FailingRetry,
		"PollInterval": o.PollInterval, "PollTimeout": o.PollTimeout,
	} {
		if d <= 0 {
			bad(name, "must be positive, got %v", d)
		}
	}
	if o.RateLimit.Count < 0 || (o.RateLimit.Count > 0 && o.RateLimit.Per <= 0) {
		bad("RateLimit", "want a positive count per positive period, or 0, got %v", o.RateLimit)
	}
	if o.Burst < 0 {
		bad("Burst", "must not be negative, got %d", o.Burst)
	}
	if o.Cooldown < 0 {
		bad("Cooldown", "must not be negative, got %v", o.Cooldown)
	}
	if o.ShutdownGrace < 0 {
		bad("ShutdownGrace", "must not be negative, got %v", o.ShutdownGrace)
	}
	if o.LookupGrace < 0 {
		bad("LookupGrace", "must not be negative, got %v", o.LookupGrace)
	}
	if o.MaxConcurrency < 1 {
		bad("MaxConcurrency", "must be at least 1, got %d", o.MaxConcurrency)
	}
	if o.MaxPending < o.MaxConcurrency {
		bad("MaxPending", "must be at least MaxConcurrency (%d), got %d", o.MaxConcurrency, o.MaxPending)
	}
	if err := o.Backoff.Validate("Options.Backoff"); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("dify: invalid options: %w", errors.Join(errs...))
	}
	return tmpls, nil
}
