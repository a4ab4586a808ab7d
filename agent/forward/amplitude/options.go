package amplitude

import (
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/vigil-edge/vigil/agent/forward"
	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/agent/secret"
)

// Options configures a Forwarder. Start from DefaultOptions.
type Options struct {
	// APIKey is the project's API key. It is a secret: it goes into the
	// request body and nowhere else (never a log, an error or Stats).
	APIKey secret.Secret
	// Region picks the host when Endpoint is empty: "us" or "eu".
	Region string
	// API is APIHTTP (default) or APIBatch.
	API API
	// Endpoint is the full URL to post to, overriding Region and API's path
	// (a proxy, a test double). The API still sets the limits.
	Endpoint string
	// DeviceID is Vigil's device id, each event's device_id. It must be an
	// id Amplitude keeps: at least MinIDLength characters, no placeholder.
	DeviceID string
	// MinIDLength is sent as options.min_id_length; Amplitude's default is 5.
	MinIDLength int
	// MinSeverity is the lowest alert severity sent: warning, major or
	// critical. Alerts below it are acknowledged unsent and counted.
	MinSeverity string
	// MinConfidence, when above 0, also skips alerts whose confidence is
	// below it or unknown (record.Alert.ConfidentEnough).
	MinConfidence float64
	// FlushInterval is the longest an event waits for its batch to fill.
	FlushInterval time.Duration
	// MaxBatch is the most events per request, below 2000.
	MaxBatch int
	// MaxBatchBytes is the largest request body: below 1 MB for the HTTP
	// API, 20 MB for Batch. An event that cannot fit is a dead letter.
	MaxBatchBytes int
	// MaxPending is the most records held in memory between read and
	// acknowledgement; the rest wait in the buffer.
	MaxPending int
	// Timeout is the timeout of one request.
	Timeout time.Duration
	// Backoff paces retries after network errors and 5xx.
	Backoff forward.Backoff
	// ThrottlePause is how long throttled devices and users wait after a
	// 429 without Retry-After (Amplitude suggests 30 s).
	ThrottlePause time.Duration
	// FailingRetry is how long the forwarder waits before trying again
	// after a permanent refusal of the whole request (state failing).
	FailingRetry time.Duration
	// AppVersion is sent as app_version (Vigil's version); may be empty.
	AppVersion string
	// Deps: dead letters, the HTTP client (default: a client with
	// Timeout), the clock and the logger.
	forward.Deps
}

// DefaultOptions returns the defaults: HTTP V2 API in the US region,
// min_id_length 5, every severity, a 1 s flush interval, 100 events and
// < 1 MB per request, a 10 s timeout, backoff from 1 s to 5 min, a 30 s
// throttle pause and a 5 min retry when failing. APIKey and DeviceID have
// no default.
func DefaultOptions() Options {
	return Options{
		Region:        "us",
		API:           APIHTTP,
		MinIDLength:   5,
		MinSeverity:   record.SeverityWarning,
		FlushInterval: time.Second,
		MaxBatch:      100,
		MaxBatchBytes: maxBytesHTTP,
		MaxPending:    1000,
		Timeout:       10 * time.Second,
		Backoff:       forward.Backoff{Initial: time.Second, Max: 5 * time.Minute},
		ThrottlePause: 30 * time.Second,
		FailingRetry:  5 * time.Minute,
	}
}

// URL returns the URL requests go to.
func (o Options) URL() string {
	if o.Endpoint != "" {
		return o.Endpoint
	}
	host := HostUS
	if o.Region == "eu" {
		host = HostEU
	}
	if o.API == APIBatch {
		return host + "/batch"
	}
	return host + "/2/httpapi"
}

// validate reports every problem with o at once, each naming its field.
// It never includes the API key.
func (o *Options) validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("Options.%s: %s", field, fmt.Sprintf(format, args...)))
	}
	if o.APIKey == "" {
		bad("APIKey", "required")
	}
	if o.Region != "us" && o.Region != "eu" {
		bad("Region", "want us or eu, got %q", o.Region)
	}
	limit := maxBytesHTTP
	switch o.API {
	case APIHTTP:
	case APIBatch:
		limit = maxBytesBatch
	default:
		bad("API", "want %q or %q, got %q", APIHTTP, APIBatch, o.API)
	}
	if o.Endpoint != "" {
		u, err := url.Parse(o.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("Endpoint", "want an http or https URL, got %q", o.Endpoint)
		}
	}
	if o.MinIDLength < 1 {
		bad("MinIDLength", "must be at least 1, got %d", o.MinIDLength)
	}
	switch {
	case o.DeviceID == "":
		bad("DeviceID", "required")
	case !ValidID(o.DeviceID, o.MinIDLength):
		bad("DeviceID", "%q is not an id Amplitude keeps (at least %d characters, not a placeholder)", o.DeviceID, o.MinIDLength)
	}
	if record.SeverityRank(o.MinSeverity) == 0 {
		bad("MinSeverity", "want warning, major or critical, got %q", o.MinSeverity)
	}
	if !(o.MinConfidence >= 0 && o.MinConfidence <= 1) {
		bad("MinConfidence", "want a value in [0, 1], got %v", o.MinConfidence)
	}
	if o.FlushInterval <= 0 {
		bad("FlushInterval", "must be positive, got %v", o.FlushInterval)
	}
	if o.MaxBatch < 1 || o.MaxBatch > maxEvents {
		bad("MaxBatch", "must be 1 to %d, got %d", maxEvents, o.MaxBatch)
	}
	if o.MaxBatchBytes < 1024 || o.MaxBatchBytes > limit {
		bad("MaxBatchBytes", "must be 1024 to %d for the %s API, got %d", limit, o.API, o.MaxBatchBytes)
	}
	if o.MaxPending < o.MaxBatch {
		bad("MaxPending", "must be at least MaxBatch (%d), got %d", o.MaxBatch, o.MaxPending)
	}
	if o.Timeout <= 0 {
		bad("Timeout", "must be positive, got %v", o.Timeout)
	}
	if err := o.Backoff.Validate("Options.Backoff"); err != nil {
		errs = append(errs, err)
	}
	if o.ThrottlePause <= 0 {
		bad("ThrottlePause", "must be positive, got %v", o.ThrottlePause)
	}
	if o.FailingRetry <= 0 {
		bad("FailingRetry", "must be positive, got %v", o.FailingRetry)
	}
	if len(errs) > 0 {
		return fmt.Errorf("amplitude: invalid options: %w", errors.Join(errs...))
	}
	return nil
}
