package source

import (
	"testing"
)

func TestPayloadDecoderID(t *testing.T) {
	d, err := NewPayloadDecoder(PayloadOptions{Fields: map[string]string{"x": "x"}, TimeField: "ts", IDField: "meta.id"})
	if err != nil {
		t.Fatal(err)
	}
	vals := make([]float64, 1)
	for _, tc := range []struct{ payload, id string }{
		{`{"ts":1,"x":1,"meta":{"id":"m-1"}}`, "m-1"},
		{`{"ts":1,"x":1,"meta":{"id":42}}`, "42"},
		{`{"ts":1,"x":1,"meta":{"id":4.20e1}}`, "4.20e1"},
		{`{"ts":1,"x":1}`, ""}, // optional
		{`{"ts":1,"x":1,"meta":{"id":null}}`, ""},
		{`{"ts":1,"x":1,"meta":{"id":"a\"b"}}`, `a"b`},
	} {
		if _, _, err := d.Decode([]byte(tc.payload), vals); err != nil {
			t.Fatalf("%s: %v", tc.payload, err)
		}
		if got := d.ID(); got != tc.id {
			t.Errorf("%s: id %q, want %q", tc.payload, got, tc.id)
		}
	}
	if _, _, err := d.Decode([]byte(`{"ts":1,"x":1,"meta":{"id":{}}}`), vals); err == nil {
		t.Error("an object id accepted")
	}
}

// TestMQTTMessageID: with an id field, an MQTT sample carries its message
// id, which the pipeline uses to tell a message sent again from a new one
// that shares its time.
func TestMQTTMessageID(t *testing.T) {
	m, sink, _ := newTestMQTT(t, func(o *MQTTOptions) { o.Payload.IDField = "seq" })
	m.handle("plant/x/pump", []byte(`{"ts":1718000000123,"seq":7,"a1":1,"a2":1,"cur":1,"pres":1,"temp":1,"thermo":1,"volt":1,"flow":1}`), false)
	m.handle("plant/x/pump", []byte(`{"ts":1718000000123,"a1":1,"a2":1,"cur":1,"pres":1,"temp":1,"thermo":1,"volt":1,"flow":1}`), false)
	ins := sink.Inputs()
	if len(ins) != 2 || ins[0].ID != "7" || ins[1].ID != "" {
		t.Fatalf("inputs %+v: want ids 7 and none", ins)
	}
}
