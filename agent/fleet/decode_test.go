package fleet

import (
	"strings"
	"testing"
)

func TestDecodeRelearnAndReset(t *testing.T) {
	for _, tt := range []struct {
		payload string
		want    Relearn
		err     string
	}{
		{`{"id":"1","stream":"pump"}`, Relearn{ID: "1", Stream: "pump"}, ""},
		{`{"id":"1","stream":"pump","samples":500}`, Relearn{ID: "1", Stream: "pump", Samples: 500}, ""},
		{`{"id":"1","stream":"pump","samples":0}`, Relearn{}, `field "samples": 0 is out of range`},
		{`{"id":"1","stream":"pump","samples":2.5}`, Relearn{}, `field "samples": want a whole number`},
		{`{"id":"1","stream":"pump","samples":"5"}`, Relearn{}, `field "samples": want a number`},
		{`{"id":"1","Stream":"pump"}`, Relearn{}, `unknown field "Stream"`},
		{`{"id":"1","stream":"a","stream":"b"}`, Relearn{}, `duplicate field "stream"`},
		{`{"id":"","stream":"pump"}`, Relearn{}, `field "id": must not be empty`},
		{`{"id":"1"}`, Relearn{}, `missing field "stream"`},
		{`{"id":"1","stream":"pump"} {}`, Relearn{}, "data after the JSON object"},
		{`[1]`, Relearn{}, "must be a JSON object"},
		{``, Relearn{}, "empty payload"},
		{`{"id":"1","stream":"p\u0001"}`, Relearn{}, "control characters"},
	} {
		got, err := DecodeRelearn([]byte(tt.payload))
		if tt.err == "" && (err != nil || got != tt.want) {
			t.Errorf("DecodeRelearn(%s) = %+v, %v; want %+v", tt.payload, got, err, tt.want)
		}
		if tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("DecodeRelearn(%s) error %v, want %q", tt.payload, err, tt.err)
		}
	}
	if r, err := DecodeReset([]byte(`{"id":"9","stream":"pump"}`)); err != nil || r != (Reset{ID: "9", Stream: "pump"}) {
		t.Errorf("DecodeReset: %+v, %v", r, err)
	}
	if _, err := DecodeReset([]byte(`{"id":"9","stream":"pump","samples":3}`)); err == nil || !strings.Contains(err.Error(), `unknown field "samples"`) {
		t.Errorf("DecodeReset with samples: %v", err)
	}
	if id := RequestID([]byte(`{"id":"7","x":[}`)); id != "" {
		t.Errorf("RequestID of malformed JSON: %q", id)
	}
	if id := RequestID([]byte(`{"id":"7","x":1}`)); id != "7" {
		t.Errorf("RequestID: %q", id)
	}
}

// FuzzDecodeStreamCommands: the decoders never panic, and what they accept
// is valid and decodes the same again once re-encoded.
func FuzzDecodeStreamCommands(f *testing.F) {
	for _, s := range []string{`{"id":"1","stream":"pump"}`, `{"id":"1","stream":"pump","samples":500}`, `{"id":"1","stream":"a","stream":"b"}`, `{"samples":1e400}`, `{"id":"\ud800","stream":"x"}`, `nul`, `{}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		RequestID(b)
		if r, err := DecodeRelearn(b); err == nil {
			if r.ID == "" || r.Stream == "" || r.Samples < 0 || r.Samples > MaxLearnSamples {
				t.Fatalf("accepted %+v", r)
			}
			again, err := DecodeRelearn(mustJSON(t, r))
			if err != nil || again != r {
				t.Fatalf("re-decoded %+v, %v; want %+v", again, err, r)
			}
		}
		if r, err := DecodeReset(b); err == nil && (r.ID == "" || r.Stream == "") {
			t.Fatalf("accepted %+v", r)
		}
	})
}
