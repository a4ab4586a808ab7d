package strictjson

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestDecodeRefuses(t *testing.T) {
	for _, tt := range []struct {
		name, payload string
		limit         int
		want          string // the whole error
	}{
		{"too large", `{"id":"12345"}`, 10, "payload of 14 bytes exceeds 10"},
		{"empty", "", 100, `empty payload: want a JSON object with an "id"`},
		{"blank", " \n\t", 100, `empty payload: want a JSON object with an "id"`},
		{"malformed", `{"id":"a",}`, 100, `malformed JSON at offset 11: invalid character '}' looking for beginning of object key string`},
		{"trailing data", `{"id":"a"} {}`, 100, `malformed JSON at offset 12: invalid character '{' after top-level value`},
		{"truncated", `{"id":`, 100, `malformed JSON at offset 6: unexpected end of JSON input`},
		{"an array", `["id"]`, 100, "payload must be a JSON object, got an array"},
		{"null", ` null `, 100, "payload must be a JSON object, got null"},
		{"a string", `"id"`, 100, "payload must be a JSON object, got a string"},
		{"a number", `12`, 100, "payload must be a JSON object, got a number"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o, err := Decode([]byte(tt.payload), tt.limit, "id")
			if err == nil || err.Error() != tt.want {
				t.Fatalf("Decode(%q) = %v, %v; want the error %q", tt.payload, o, err, tt.want)
			}
		})
	}
	if _, err := Decode(nil, 100, "payload"); err == nil || err.Error() != "empty payload: want a JSON object" {
		t.Errorf("empty payload without an id field: %v", err)
	}
}

func TestDecodeFields(t *testing.T) {
	o, err := Decode([]byte(` {"n":3, "s":"x", "ID":"a", "s":"y", "id":"b", "ID":"c"} `), 1<<10, "id", "s", "n", "f")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(o.Keys(), ","), "n,s,id"; got != want {
		t.Errorf("Keys = %s, want %s", got, want)
	}
	if s := o.Str("s", true, 8); s != "x" {
		t.Errorf("s = %q, want the first of the duplicates", s)
	}
	if id := o.Str("id", true, 8); id != "b" {
		t.Errorf("id = %q", id)
	}
	if n := o.Int("n", true, 0, 10, -1); n != 3 {
		t.Errorf("n = %d", n)
	}
	if f, ok := o.Float("f", false); ok || f != 0 {
		t.Errorf("absent optional f = %v, %v", f, ok)
	}
	o.Bad("n", "odd, got %d", 3)
	want := `unknown field "ID"; duplicate field "s"; unknown field "ID"; field "n": odd, got 3`
	if err := o.Err(); err == nil || err.Error() != want {
		t.Errorf("Err = %v\nwant %s", err, want)
	}

	o, err = Decode([]byte(`{}`), 10, "id")
	if err != nil || o.Err() != nil || len(o.Keys()) != 0 {
		t.Fatalf("empty object: %v, %v, %v", o, err, o.Err())
	}
}

func TestRules(t *testing.T) {
	long := strings.Repeat("x", 9)
	for _, tt := range []struct {
		name, value string // value: the raw JSON of field "v"; "" for absent
		read        func(o *Object) any
		want        any
		err         string // the whole of Err; "" for none
	}{
		{"string", `"abc"`, str(true), "abc", ""},
		{"string escapes", `"a\u00e9"`, str(true), "aé", ""},
		{"string missing", "", str(true), "", `missing field "v"`},
		{"optional string absent", "", str(false), "", ""},
		{"optional string empty", `""`, str(false), "", ""},
		{"string empty", `""`, str(true), "", `field "v": must not be empty`},
		{"string too long", `"` + long + `"`, str(true), "", `field "v": longer than 8 bytes`},
		{"optional string too long", `"` + long + `"`, str(false), "", `field "v": longer than 8 bytes`},
		{"string with a control character", `"a\u001b[2J"`, str(false), "", `field "v": must not contain control characters`},
		{"string got a number", `7`, str(true), "", `field "v": want a string, got a number`},
		{"string got null", `null`, str(false), "", `field "v": want a string, got null`},
		{"string got an object", `{"a":1}`, str(true), "", `field "v": want a string, got an object`},
		{"string got a boolean", `true`, str(true), "", `field "v": want a string, got a boolean`},

		{"integer", `42`, integer(true), int64(42), ""},
		{"integer with an exponent", `1e1`, integer(true), int64(-1), `field "v": want a whole number without a fraction or an exponent, got 1e1`},
		{"integer with a fraction", `10.0`, integer(true), int64(-1), `field "v": want a whole number without a fraction or an exponent, got 10.0`},
		{"integer at the bounds", `100`, integer(true), int64(100), ""},
		{"integer missing", "", integer(true), int64(-1), `missing field "v"`},
		{"optional integer absent", "", integer(false), int64(-1), ""},
		{"integer below", `-1`, integer(true), int64(-1), `field "v": -1 is out of range [0, 100]`},
		{"integer above int64", `1e30`, integer(true), int64(-1), `field "v": 1e30 is out of range [0, 100]`},
		{"integer not whole", `2.5`, integer(true), int64(-1), `field "v": want a whole number, got 2.5`},
		{"integer beyond float64", `1e400`, integer(true), int64(-1), `field "v": want a whole number, got 1e400`},
		{"integer got a string", `"5"`, integer(true), int64(-1), `field "v": want a number, got a string`},
		{"integer got null", `null`, integer(false), int64(-1), `field "v": want a number, got null`},

		{"number", `1.25`, number(true), 1.25, ""},
		{"number negative", `-3e-2`, number(true), -0.03, ""},
		{"number missing", "", number(true), notOK, `missing field "v"`},
		{"optional number absent", "", number(false), notOK, ""},
		{"number got a string", `"high"`, number(true), notOK, `field "v": want a number, got a string`},
		{"number got an array", `[1]`, number(true), notOK, `field "v": want a number, got an array`},
		{"number out of range", `1e400`, number(true), notOK, `field "v": 1e400 is not a representable number`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			payload := `{}`
			if tt.value != "" {
				payload = `{"v": ` + tt.value + ` }`
			}
			o, err := Decode([]byte(payload), 1<<10, "v")
			if err != nil {
				t.Fatal(err)
			}
			if got := tt.read(o); got != tt.want {
				t.Errorf("%s: got %#v, want %#v", payload, got, tt.want)
			}
			gotErr := ""
			if err := o.Err(); err != nil {
				gotErr = err.Error()
			}
			if gotErr != tt.err {
				t.Errorf("%s: Err = %q, want %q", payload, gotErr, tt.err)
			}
		})
	}
}

func str(required bool) func(*Object) any {
	return func(o *Object) any { return o.Str("v", required, 8) }
}

func integer(required bool) func(*Object) any {
	return func(o *Object) any { return o.Int("v", required, 0, 100, -1) }
}

// notOK stands for Float's ok = false with f = 0.
const notOK = "not ok"

func number(required bool) func(*Object) any {
	return func(o *Object) any {
		if f, ok := o.Float("v", required); ok || f != 0 {
			return f
		}
		return notOK
	}
}

func TestPeek(t *testing.T) {
	for _, tt := range []struct {
		payload string
		want    string
	}{
		{`{"id":"7","x":1}`, "7"},
		{`{"x":{"id":"inner"},"id":"7"}`, "7"},
		{`{"id":"7","id":"8"}`, "8"},
		{`{"id":"7","id":8}`, "7"},
		{`{"ID":"7"}`, ""},
		{`{"id":7}`, ""},
		{`{"id":"a\u0007"}`, ""},
		{`{"id":"123456789"}`, ""},
		{`{"id":"7","x":[}`, ""},
		{`{"id":"7"} {}`, ""},
		{`["id","7"]`, ""},
		{``, ""},
		{`{"id":"7","pad":"` + strings.Repeat("x", 100) + `"}`, ""},
	} {
		if got := Peek([]byte(tt.payload), 100, "id", 8); got != tt.want {
			t.Errorf("Peek(%s) = %q, want %q", tt.payload, got, tt.want)
		}
	}
}

func TestKind(t *testing.T) {
	for v, want := range map[string]string{
		` "x"`: "a string", "\n{}": "an object", `[]`: "an array", `true`: "a boolean", `false`: "a boolean",
		`null`: "null", `-1`: "a number", `0.5`: "a number", ``: "nothing", " \t": "nothing",
	} {
		if got := Kind([]byte(v)); got != want {
			t.Errorf("Kind(%q) = %q, want %q", v, got, want)
		}
	}
}

// FuzzDecode: Decode never panics; what it accepts with no problem is what
// encoding/json reads from the payload, with only the allowed fields, and
// Peek finds the same string.
func FuzzDecode(f *testing.F) {
	for _, s := range []string{
		`{"s":"a","n":3,"f":1.5}`, `{"s":"a","s":"b"}`, `{"S":"a"}`, `{"n":2.5}`, `{"n":1e400}`, `{"f":"1"}`,
		`{"s":"\ud800"}`, `{"s":"a\u0000"}`, `[]`, `null`, `{"s":"a"} {}`, ``, ` {"n": -0 } `,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		const limit = 1 << 10
		o, err := Decode(payload, limit, "s", "n", "f")
		if err != nil {
			if len(payload) <= limit && json.Valid(payload) && Kind(payload) == "an object" {
				t.Fatalf("refused the valid object %q: %v", payload, err)
			}
			return
		}
		s := o.Str("s", false, 16)
		n := o.Int("n", false, -1000, 1000, 0)
		fl, _ := o.Float("f", false)
		if peek := Peek(payload, limit, "s", 16); o.Err() == nil && peek != s {
			t.Fatalf("Peek(%q) = %q; Str said %q", payload, peek, s)
		}
		if o.Err() != nil {
			return
		}
		var m map[string]any
		if err := json.Unmarshal(payload, &m); err != nil {
			t.Fatalf("accepted %q that encoding/json refuses: %v", payload, err)
		}
		for k, v := range m {
			switch k {
			case "s":
				if v != s {
					t.Fatalf("s = %q; encoding/json says %v", s, v)
				}
			case "n":
				if v != float64(n) {
					t.Fatalf("n = %d; encoding/json says %v", n, v)
				}
			case "f":
				if v != fl {
					t.Fatalf("f = %v; encoding/json says %v", fl, v)
				}
			default:
				t.Fatalf("accepted %q with the field %q", payload, k)
			}
		}
		if len(m) != len(o.Keys()) {
			t.Fatalf("accepted %q: keys %q, encoding/json reads %d", payload, o.Keys(), len(m))
		}
	})
}
