package source

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

// benchPayload is the bus's pump message.
const benchPayload = `{"ts":1718000000123,"a1":0.0265878,"a2":0.0401113,"cur":1.3302,"pres":0.054711,"temp":79.3366,"thermo":26.0199,"volt":233.062,"flow":32.0}`

func pumpPayloadOptions() PayloadOptions {
	fields := map[string]string{}
	for i, c := range pumpChannels {
		fields[c] = pumpChannelIDs[i]
	}
	return PayloadOptions{Fields: fields, Channels: PumpChannels(), TimeField: "ts"}
}

func TestDecodePayload(t *testing.T) {
	ms := time.UnixMilli(1718000000123).UTC()
	flat := PayloadOptions{Fields: map[string]string{"x": "x", "y": "y"}, TimeField: "ts"}
	tests := []struct {
		name   string
		opts   PayloadOptions
		in     string
		vals   []float64
		time   time.Time
		stream string
		reason DropReason // expected error
		field  string
	}{
		{name: "pump", opts: pumpPayloadOptions(), in: benchPayload,
			vals: []float64{0.0265878, 0.0401113, 1.3302, 0.054711, 79.3366, 26.0199, 233.062, 32.0}, time: ms},
		{name: "whitespace and order", opts: flat, in: " \n{ \"y\" : -2.5e3 ,\t\"ts\":\"2024-06-10T06:13:20.123Z\", \"x\":0 }\r\n",
			vals: []float64{0, -2500}, time: ms},
		{name: "no time", opts: flat, in: `{"x":1,"y":2}`, vals: []float64{1, 2}},
		{name: "null time", opts: flat, in: `{"x":1,"y":2,"ts":null}`, vals: []float64{1, 2}},
		{name: "nested paths", opts: PayloadOptions{Fields: map[string]string{"f": "s.flow.rms", "p": "s.p"}, TimeField: "meta.ts"},
			in:   `{"meta":{"ts":1718000000.123,"fw":"1.2"},"s":{"p":3,"flow":{"rms":4,"peak":[1,2,{"x":null}]}}}`,
			vals: []float64{4, 3}, time: ms},
		{name: "escaped key", opts: flat, in: `{"\u0078":1,"y":2}`, vals: []float64{1, 2}},
		{name: "skipped values of every kind", opts: flat,
			in:   `{"s":"a \"quoted\" \\ \u00e9 ü","arr":[1,[true,false,null],{"k":"v"}],"o":{},"n":-1.5E-3,"b":true,"x":1,"y":2,"nan":NaN}`,
			vals: []float64{1, 2}},
		{name: "duplicate key: last wins", opts: flat, in: `{"x":1,"y":2,"x":3}`, vals: []float64{3, 2}},
		{name: "stream field", opts: PayloadOptions{Fields: map[string]string{"x": "x"}, StreamField: "dev.id"},
			in: `{"x":1,"dev":{"id":"pump-7"}}`, vals: []float64{1}, stream: "pump-7"},

		{name: "missing", opts: flat, in: `{"x":1}`, reason: DropMissing, field: "y"},
		{name: "null value", opts: flat, in: `{"x":1,"y":null}`, reason: DropMissing, field: "y"},
		{name: "string for number", opts: flat, in: `{"x":"1","y":2}`, reason: DropInvalid, field: "x"},
		{name: "bool for number", opts: flat, in: `{"x":true,"y":2}`, reason: DropInvalid, field: "x"},
		{name: "object for number", opts: flat, in: `{"x":{"v":1},"y":2}`, reason: DropInvalid, field: "x"},
		{name: "array for number", opts: flat, in: `{"x":[1],"y":2}`, reason: DropInvalid, field: "x"},
		{name: "NaN", opts: flat, in: `{"x":NaN,"y":2}`, reason: DropNonFinite, field: "x"},
		{name: "Infinity", opts: flat, in: `{"x":1,"y":Infinity}`, reason: DropNonFinite, field: "y"},
		{name: "-Infinity", opts: flat, in: `{"x":-Infinity,"y":2}`, reason: DropNonFinite, field: "x"},
		{name: "overflow", opts: flat, in: `{"x":1e999,"y":2}`, reason: DropNonFinite, field: "x"},
		{name: "bad number", opts: flat, in: `{"x":1.2.3,"y":2}`, reason: DropInvalid, field: "x"},
		{name: "bad time", opts: flat, in: `{"x":1,"y":2,"ts":"soon"}`, reason: DropInvalid, field: "ts"},
		{name: "bad time type", opts: flat, in: `{"x":1,"y":2,"ts":[1]}`, reason: DropInvalid, field: "ts"},
		{name: "stream missing", opts: PayloadOptions{Fields: map[string]string{"x": "x"}, StreamField: "dev"}, in: `{"x":1}`, reason: DropMissing, field: "dev"},
		{name: "stream not a string", opts: PayloadOptions{Fields: map[string]string{"x": "x"}, StreamField: "dev"}, in: `{"x":1,"dev":7}`, reason: DropInvalid, field: "dev"},
		{name: "array", opts: flat, in: `[1,2]`, reason: DropInvalid},
		{name: "empty", opts: flat, in: ``, reason: DropInvalid},
		{name: "truncated", opts: flat, in: `{"x":1,"y":`, reason: DropInvalid},
		{name: "truncated string", opts: flat, in: `{"x":1,"y":2,"s":"abc`, reason: DropInvalid},
		{name: "trailing data", opts: flat, in: `{"x":1,"y":2} {}`, reason: DropInvalid},
		{name: "missing colon", opts: flat, in: `{"x" 1,"y":2}`, reason: DropInvalid},
		{name: "control char", opts: flat, in: "{\"x\":1,\"y\":2,\"s\":\"a\x01\"}", reason: DropInvalid},
		{name: "too deep", opts: flat, in: `{"x":1,"y":2,"d":` + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + `}`, reason: DropInvalid},
		{name: "bad literal", opts: flat, in: `{"x":1,"y":2,"b":tru}`, reason: DropInvalid},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d, err := NewPayloadDecoder(tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			vals := make([]float64, len(d.Channels()))
			ts, stream, err := d.Decode([]byte(tt.in), vals)
			if tt.reason != "" {
				var pe *PayloadError
				if !errors.As(err, &pe) || pe.Reason != tt.reason || (tt.field != "" && pe.Field != tt.field) {
					t.Fatalf("error %v, want %s on field %q", err, tt.reason, tt.field)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(vals, tt.vals) || !ts.Equal(tt.time) || stream != tt.stream {
				t.Fatalf("got %v %v %q, want %v %v %q", vals, ts, stream, tt.vals, tt.time, tt.stream)
			}
		})
	}
}

func TestPayloadOptionsErrors(t *testing.T) {
	for _, tt := range []struct {
		opts PayloadOptions
		want string
	}{
		{PayloadOptions{}, "Fields: no channels"},
		{PayloadOptions{Fields: map[string]string{"x": "a..b"}}, `Fields["x"]: bad field path`},
		{PayloadOptions{Fields: map[string]string{"x": "x"}, Channels: []string{"y"}}, `channel "x" is not in Channels`},
		{PayloadOptions{Channels: []string{"y", "y"}}, `channel "y" listed twice`},
		{PayloadOptions{Channels: []string{"y"}, TimeFormat: "whenever"}, "TimeFormat"},
		{PayloadOptions{Events: true}, "Events"},
	} {
		_, err := NewPayloadDecoder(tt.opts)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%+v: error %v, want %q", tt.opts, err, tt.want)
		}
	}
	// Channels without Fields read fields of their own names.
	d, err := NewPayloadDecoder(PayloadOptions{Channels: []string{"b", "a"}})
	if err != nil {
		t.Fatal(err)
	}
	vals := make([]float64, 2)
	if _, _, err := d.Decode([]byte(`{"a":1,"b":2}`), vals); err != nil || vals[0] != 2 || vals[1] != 1 {
		t.Fatalf("got %v, %v", vals, err)
	}
}

func TestDecodePayloadNoAllocs(t *testing.T) {
	d, err := NewPayloadDecoder(pumpPayloadOptions())
	if err != nil {
		t.Fatal(err)
	}
	opts := pumpPayloadOptions()
	opts.StreamField = "dev"
	ds, err := NewPayloadDecoder(opts)
	if err != nil {
		t.Fatal(err)
	}
	vals := make([]float64, 8)
	p := []byte(benchPayload)
	ps := []byte(`{"dev":"pump\u002d1",` + benchPayload[1:])
	if n := testing.AllocsPerRun(100, func() { d.Decode(p, vals) }); n != 0 {
		t.Errorf("Decode allocates %v times", n)
	}
	if n := testing.AllocsPerRun(100, func() { ds.Decode(ps, vals) }); n != 0 {
		t.Errorf("Decode with a stream field allocates %v times", n)
	}
	if _, s, _ := ds.Decode(ps, vals); s != "pump-1" {
		t.Errorf("stream %q", s)
	}
}

// FuzzDecodePayload checks that no payload crashes the decoder, that what
// it accepts is finite, and that for valid JSON it agrees with
// encoding/json.
func FuzzDecodePayload(f *testing.F) {
	for _, s := range []string{
		benchPayload,
		`{"x":1,"y":2}`, `{"x":1,"y":2,"ts":"2024-06-10T06:13:20Z"}`, `{"x":NaN}`, `{"x":1e999,"y":-0}`,
		`{"s":{"x":[1,{"y":2}]},"x":"\ud83d\ude00","y":{"z":3}}`, `{"x":1,"y":2,"dev":"a\"b"}`,
		`[`, `{`, `{"x":`, `"`, `{"\u`, `{"x":-}`, `{"x":01,"y":.5}`,
		`{"x":1,"y":2,"id":"m-1"}`, `{"x":1,"y":2,"id":-7e3}`, `{"id":{"x":1},"x":1}`,
	} {
		f.Add([]byte(s))
	}
	d, err := NewPayloadDecoder(PayloadOptions{Fields: map[string]string{"x": "x", "y": "y", "z": "s.z"}, Channels: []string{"x", "y", "z"}, TimeField: "ts", StreamField: "dev", IDField: "id"})
	if err != nil {
		f.Fatal(err)
	}
	flat, err := NewPayloadDecoder(PayloadOptions{Fields: map[string]string{"x": "x", "y": "y"}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, p []byte) {
		vals := make([]float64, 3)
		if _, _, err := d.Decode(p, vals); err == nil && d.ID() != "" && !bytes.Contains(p, []byte(`"id"`)) && !bytes.Contains(p, []byte(`\u`)) {
			t.Fatalf("id %q from a payload without an id field", d.ID())
		}
		v2 := make([]float64, 2)
		_, _, err := flat.Decode(p, v2)
		if err != nil {
			var pe *PayloadError
			if !errors.As(err, &pe) || pe.Reason == "" {
				t.Fatalf("error %v is not a PayloadError", err)
			}
			return
		}
		for _, v := range v2 {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				t.Fatalf("accepted a non-finite value %v", v)
			}
		}
		if !json.Valid(p) {
			return // the decoder is lenient about some malformed JSON (leading zeros, ...)
		}
		var m map[string]any
		if err := json.Unmarshal(p, &m); err != nil {
			return
		}
		// encoding/json matches keys case-insensitively; compare only
		// when the exact keys are there.
		for i, k := range []string{"x", "y"} {
			if x, ok := m[k].(float64); ok && x != v2[i] {
				t.Fatalf("%s = %v, encoding/json says %v", k, v2[i], x)
			}
		}
	})
}

// benchDecode measures d decoding p into one values slice, reused.
func benchDecode(b *testing.B, d *PayloadDecoder, p []byte) {
	vals := make([]float64, len(d.Channels()))
	b.SetBytes(int64(len(p)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := d.Decode(p, vals); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodePayload(b *testing.B) {
	p := []byte(benchPayload)
	d, err := NewPayloadDecoder(pumpPayloadOptions())
	if err != nil {
		b.Fatal(err)
	}
	b.Run("pump", func(b *testing.B) { benchDecode(b, d, p) })
	b.Run("pump_new_values", func(b *testing.B) {
		// As the MQTT handler does: a fresh values slice per message.
		b.SetBytes(int64(len(p)))
		b.ReportAllocs()
		for b.Loop() {
			vals := make([]float64, 8)
			if _, _, err := d.Decode(p, vals); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("nested", func(b *testing.B) {
		np := []byte(`{"meta":{"ts":"2024-06-10T06:13:20.123Z","fw":"1.2.3","tags":["a","b"]},"dev":"pump-1","s":{"a1":0.0265878,"a2":0.0401113,"cur":1.3302,"pres":0.054711,"temp":79.3366,"thermo":26.0199,"volt":233.062,"flow":32.0}}`)
		o := pumpPayloadOptions()
		for c, f := range o.Fields {
			o.Fields[c] = "s." + f
		}
		o.TimeField, o.StreamField = "meta.ts", "dev"
		nd, err := NewPayloadDecoder(o)
		if err != nil {
			b.Fatal(err)
		}
		benchDecode(b, nd, np)
	})
	b.Run("encoding_json_map", func(b *testing.B) {
		// For comparison: what the decoder avoids.
		b.SetBytes(int64(len(p)))
		b.ReportAllocs()
		for b.Loop() {
			var m map[string]any
			if err := json.Unmarshal(p, &m); err != nil {
				b.Fatal(err)
			}
		}
	})
}
