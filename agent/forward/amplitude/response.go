package amplitude

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
)

// response is what Amplitude says about a request, decoded leniently: a
// field of an unexpected shape is left empty instead of failing the whole
// decode, so a surprise in one field never hides the others.
type response struct {
	Code             int
	Error            string
	MissingField     string
	InvalidFields    map[string][]int
	MissingFields    map[string][]int
	SilencedDevices  []string
	SilencedEvents   []int
	EPSThreshold     float64
	ThrottledDevices map[string]float64
	ThrottledUsers   map[string]float64
	ThrottledEvents  []int
	QuotaDevices     map[string]float64
	QuotaUsers       map[string]float64
	EventsIngested   int
}

// decodeResponse decodes a response body of any status. A body that is not
// a JSON object gives an empty response.
func decodeResponse(body []byte) response {
	var r response
	var m map[string]json.RawMessage
	if json.Unmarshal(body, &m) != nil {
		return r
	}
	field := func(name string, v any) {
		if raw, ok := m[name]; ok {
			if json.Unmarshal(raw, v) != nil {
				// Leave the zero value: a malformed field is as good as absent.
				switch p := v.(type) {
				case *map[string][]int:
					*p = nil
				case *map[string]float64:
					*p = nil
				case *[]int:
					*p = nil
				case *[]string:
					*p = nil
				}
			}
		}
	}
	var code float64
	field("code", &code)
	r.Code = int(code)
	field("error", &r.Error)
	field("missing_field", &r.MissingField)
	field("events_with_invalid_fields", &r.InvalidFields)
	field("events_with_missing_fields", &r.MissingFields)
	field("silenced_devices", &r.SilencedDevices)
	field("silenced_events", &r.SilencedEvents)
	field("eps_threshold", &r.EPSThreshold)
	field("throttled_devices", &r.ThrottledDevices)
	field("throttled_users", &r.ThrottledUsers)
	field("throttled_events", &r.ThrottledEvents)
	field("exceeded_daily_quota_devices", &r.QuotaDevices)
	field("exceeded_daily_quota_users", &r.QuotaUsers)
	var ingested float64
	field("events_ingested", &ingested)
	r.EventsIngested = int(ingested)
	return r
}

// rejected returns, for a 400 answer to a request of n events, the indexes
// of the events Amplitude refused and why (e.g. "invalid field time,
// missing field event_type", "silenced device"). Indexes outside [0, n) are
// ignored. An empty result means the whole request was refused.
func (r response) rejected(n int) map[int]string {
	reasons := map[int][]string{}
	add := func(i int, why string) {
		if i >= 0 && i < n {
			reasons[i] = append(reasons[i], why)
		}
	}
	for _, f := range slices.Sorted(maps.Keys(r.InvalidFields)) {
		for _, i := range r.InvalidFields[f] {
			add(i, "invalid field "+f)
		}
	}
	for _, f := range slices.Sorted(maps.Keys(r.MissingFields)) {
		for _, i := range r.MissingFields[f] {
			add(i, "missing field "+f)
		}
	}
	for _, i := range r.SilencedEvents {
		add(i, "silenced device")
	}
	out := make(map[int]string, len(reasons))
	for i, rs := range reasons {
		out[i] = strings.Join(rs, ", ")
	}
	return out
}
