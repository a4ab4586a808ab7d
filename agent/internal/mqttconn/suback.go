package mqttconn

import (
	"fmt"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// Refused returns an error naming a filter that a completed subscription's
// SUBACK refused (MQTT 3.1.1 return code 0x80), or nil. paho completes a
// refused subscription without an error, and a clustered broker refuses
// one while it cannot serve it: a NATS node refuses a QoS 1 subscription
// while JetStream elects its leaders after another node died. A client that
// does not check stays connected and deaf.
func Refused(tok paho.Token) error {
	st, ok := tok.(*paho.SubscribeToken)
	if !ok {
		return nil
	}
	for f, code := range st.Result() {
		if code >= 0x80 {
			return fmt.Errorf("subscribe %s: the broker refused it (SUBACK code %#x)", f, code)
		}
	}
	return nil
}
