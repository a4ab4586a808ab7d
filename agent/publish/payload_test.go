package publish

import (
	"encoding/json"
	"errors"
	"maps"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/record"
)

func TestRewrite(t *testing.T) {
	tests := []struct {
		name, in string
		seq      uint64
		replayed bool
		key      string
		want     string
		wantKey  string
		wantErr  bool
	}{
		{name: "adds seq and replayed", in: `{"id":"a","stream":"pump"}`, seq: 7, key: "stream",
			want: `{"seq":7,"id":"a","stream":"pump","replayed":false}`, wantKey: "pump"},
		{name: "replaces both", in: `{"seq":0,"id":"a","replayed":false}`, seq: 9, replayed: true,
			want: `{"seq":9,"id":"a","replayed":true}`},
		{name: "escaped names are the same names", in: `{"se\u0071":1,"x":2}`, seq: 3,
			want: `{"seq":3,"x":2,"replayed":false}`},
		{name: "empty object", in: ` { } `, seq: 1, want: `{"seq":1,"replayed":false}`},
		{name: "nested values and strings that look like members", in: `{"a":{"seq":5,"b":[1,"}",{"c":"\"replayed\":false"}]},"stream":"s\/1"}`,
			seq: 2, key: "stream", want: `{"seq":2,"a":{"seq":5,"b":[1,"}",{"c":"\"replayed\":false"}]},"stream":"s\/1","replayed":false}`, wantKey: "s/1"},
		{name: "key not a string", in: `{"stream":5}`, seq: 1, key: "stream", want: `{"seq":1,"stream":5,"replayed":false}`},
		{name: "whitespace kept inside values", in: "{\n \"a\" : [ 1 , 2 ] \n}", seq: 1, want: `{"seq":1,"a":[ 1 , 2 ],"replayed":false}`},
		{name: "array", in: `[1]`, wantErr: true},
		{name: "string", in: `"x"`, wantErr: true},
		{name: "truncated", in: `{"id":"a"`, wantErr: true},
		{name: "empty", in: ``, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, key, err := rewrite(nil, []byte(tt.in), tt.seq, tt.replayed, tt.key)
			if tt.wantErr {
				if err == nil {
					t.Fatalf("rewrite(%s) = %s; want an error", tt.in, out)
				}
				return
			}
			if err != nil {
				t.Fatalf("rewrite(%s): %v", tt.in, err)
			}
			if string(out) != tt.want || string(key) != tt.wantKey {
				t.Fatalf("rewrite(%s) = %s, key %q; want %s, key %q", tt.in, out, key, tt.want, tt.wantKey)
			}
		})
	}
}

// TestRewriteRecords checks the rewrite against the records the pipeline
// stores: decoding the result gives the record with Seq and Replayed set.
func TestRewriteRecords(t *testing.T) {
	ts := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	alert := record.Alert{ID: "a-1", TS: ts, Device: "d", Stream: "pump", Kind: "sensor", Score: 3.5, Threshold: 1,
		Severity: record.SeverityMajor, Episode: "e", State: "open", Window: record.Window{Start: ts.Add(-time.Second), End: ts},
		TopFeatures: []record.Feature{{Name: "rpm", Share: 0.7}}, Model: "m@1"}
	data, err := json.Marshal(alert)
	if err != nil {
		t.Fatal(err)
	}
	out, key, err := rewrite(nil, data, 42, true, "stream")
	if err != nil {
		t.Fatal(err)
	}
	var got record.Alert
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("decode %s: %v", out, err)
	}
	alert.Seq, alert.Replayed = 42, true
	if !reflect.DeepEqual(got, alert) || string(key) != "pump" {
		t.Fatalf("got %+v key %q\nwant %+v key pump", got, key, alert)
	}
}

func TestAppendLevel(t *testing.T) {
	for in, want := range map[string]string{
		"pump-1": "pump-1", "": "_", "a/b": "a_b", "a+b#": "a_b_", "x\x00y": "x_y", "caf\xc3": "caf_", "ünï": "ünï",
	} {
		if got := string(appendLevel([]byte("p/"), []byte(in))); got != "p/"+want {
			t.Errorf("appendLevel(%q) = %q; want %q", in, got, "p/"+want)
		}
	}
}

// FuzzRewrite checks that a rewrite of any JSON object is valid JSON with the
// same members, seq and replayed set, and that anything else is refused.
func FuzzRewrite(f *testing.F) {
	for _, s := range []string{`{"id":"a","stream":"pump"}`, `{"seq":1,"replayed":true}`, `{}`, `[]`, `{"a":{"b":[1,2,{"c":"}"}]}}`,
		`{"stream":"a\/b\u0000"}`, `{"x":1e400}`, ` {"k" : null } `, `{"a":1,"a":2}`} {
		f.Add([]byte(s), uint64(5), true)
	}
	f.Fuzz(func(t *testing.T, in []byte, seq uint64, replayed bool) {
		out, key, err := rewrite(nil, in, seq, replayed, "stream")
		src, srcErr := decodeNumbers(in)
		isObject := json.Valid(in) && srcErr == nil
		if err != nil {
			if isObject {
				t.Fatalf("rewrite refused a JSON object %q: %v", in, err)
			}
			return
		}
		if !isObject {
			t.Fatalf("rewrite accepted %q, not a JSON object", in)
		}
		if !json.Valid(out) {
			t.Fatalf("rewrite(%q) = %q: not valid JSON", in, out)
		}
		got, err := decodeNumbers(out)
		if err != nil {
			t.Fatalf("decode %q: %v", out, err)
		}
		if n, _ := got["seq"].(json.Number); string(n) != jsonUint(seq) || got["replayed"] != replayed {
			t.Fatalf("rewrite(%q) = %q: seq %v replayed %v; want %d %v", in, out, got["seq"], got["replayed"], seq, replayed)
		}
		delete(got, "seq")
		delete(got, "replayed")
		delete(src, "seq")
		delete(src, "replayed")
		if !maps.EqualFunc(got, src, func(a, b any) bool { return reflect.DeepEqual(a, b) }) {
			t.Fatalf("rewrite(%q) = %q: members differ", in, out)
		}
		if s, ok := src["stream"].(string); ok && string(key) != s {
			t.Fatalf("rewrite(%q): key %q; want %q", in, key, s)
		}
	})
}

// decodeNumbers decodes a JSON object keeping numbers as written, so that
// out-of-range numbers (valid JSON) decode too.
func decodeNumbers(b []byte) (map[string]any, error) {
	d := json.NewDecoder(strings.NewReader(string(b)))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		return nil, err
	}
	if m == nil {
		return nil, errNotObject // null
	}
	if d.More() {
		return nil, errors.New("trailing data")
	}
	return m, nil
}

func jsonUint(n uint64) string {
	b, _ := json.Marshal(n)
	return string(b)
}
