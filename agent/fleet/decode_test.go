package fleet

import (
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/models"
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
		{`{"id":"1","stream":"pump"} {}`, Relearn{}, "malformed JSON at offset 28: invalid character '{' after top-level value"},
		{`[1]`, Relearn{}, "payload must be a JSON object, got an array"},
		{`{"id":1,"stream":"pump"}`, Relearn{}, `field "id": want a string, got a number`},
		{`{"id":"1","stream":"pump","samples":null}`, Relearn{}, `field "samples": want a number, got null`},
		{`{"id":"1","stream":"pump","samples":1e3}`, Relearn{}, `field "samples": want a whole number without a fraction or an exponent, got 1e3`},
		{`{"id":"1","stream":7,"x":1}`, Relearn{}, `unknown field "x"; field "stream": want a string, got a number`},
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

func TestSignedCommandRoundTrip(t *testing.T) {
	_, priv, _ := models.GenerateKey()
	env := SignCommand(priv, "dev-1", "reset", []byte(`{"id":"1","stream":"s"}`), time.Now())
	if !IsSigned(env) || IsSigned([]byte(`{"id":"1"}`)) {
		t.Fatal("IsSigned")
	}
	s, err := DecodeSigned(env)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Verify("dev-1", "reset"); err != nil {
		t.Fatal(err)
	}
	for _, tt := range [][2]string{{"dev-2", "reset"}, {"dev-1", "relearn"}} {
		if err := s.Verify(tt[0], tt[1]); err == nil {
			t.Errorf("verified for %v", tt)
		}
	}
	s.Payload = []byte(`{"id":"1","stream":"t"}`)
	if err := s.Verify("dev-1", "reset"); err == nil {
		t.Error("verified an altered payload")
	}
}

// FuzzDecodeSigned: never panics; what it accepts has a key, a signature
// of the right sizes and a time.
func FuzzDecodeSigned(f *testing.F) {
	_, priv, _ := models.GenerateKey()
	f.Add(SignCommand(priv, "d", "reset", []byte(`{"id":"1"}`), time.Unix(0, 0)))
	f.Add([]byte(`{"payload":"x","ts":"2026-01-01T00:00:00Z","nonce":"00","key":"","sig":""}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		IsSigned(b)
		s, err := DecodeSigned(b)
		if err != nil {
			return
		}
		if len(s.Key) != 32 || len(s.Sig) != 64 || s.Time.IsZero() && s.TS == "" || len(s.Payload) == 0 {
			t.Fatalf("accepted %+v", s)
		}
		_ = s.Verify("d", "reset")
	})
}
