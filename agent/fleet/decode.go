// Package fleet holds what the device and the operator's side share to
// manage models and settings over MQTT: the payloads of the relearn, reset
// and deploy-model commands and their strict decoders, and model
// signatures (sign.go).
package fleet

import "github.com/vigil-edge/vigil/agent/internal/strictjson"

// Limits of a command's fields.
const (
	// MaxChunk is the largest deploy-model chunk, in bytes before base64.
	MaxChunk     = 1 << 20
	MaxIDLen     = 128
	MaxStreamLen = 128
	// MaxPayload bounds any command payload this package decodes: a
	// deploy-model chunk of MaxChunk bytes in base64 with its fields.
	MaxPayload = MaxChunk*4/3 + 4096
)

// object decodes payload strictly as one JSON object of at most MaxPayload
// bytes with only the allowed fields; see strictjson.Decode.
func object(payload []byte, allowed ...string) (*strictjson.Object, error) {
	return strictjson.Decode(payload, MaxPayload, allowed...)
}

// RequestID digs the id out of a payload that failed to decode, so that an
// error reply can still be matched to its request; "" if there is none.
func RequestID(payload []byte) string {
	return strictjson.Peek(payload, MaxPayload, "id", MaxIDLen)
}

// Relearn is the relearn command: start a new learning period for Stream,
// of Samples samples (0: the stream's learn.samples).
type Relearn struct {
	ID      string `json:"id"`
	Stream  string `json:"stream"`
	Samples int    `json:"samples,omitempty"`
}

// MaxLearnSamples bounds a relearn's samples.
const MaxLearnSamples = 10_000_000

// DecodeRelearn decodes {"id": string, "stream": string, "samples"?: integer
// in [1, MaxLearnSamples]} strictly.
func DecodeRelearn(payload []byte) (Relearn, error) {
	f, err := object(payload, "id", "stream", "samples")
	if err != nil {
		return Relearn{}, err
	}
	r := Relearn{ID: f.Str("id", true, MaxIDLen), Stream: f.Str("stream", true, MaxStreamLen)}
	r.Samples = int(f.Int("samples", false, 1, MaxLearnSamples, 0))
	return r, f.Err()
}

// Reset is the reset command: return Stream to the config's values.
type Reset struct {
	ID     string `json:"id"`
	Stream string `json:"stream"`
}

// DecodeReset decodes {"id": string, "stream": string} strictly.
func DecodeReset(payload []byte) (Reset, error) {
	f, err := object(payload, "id", "stream")
	if err != nil {
		return Reset{}, err
	}
	r := Reset{ID: f.Str("id", true, MaxIDLen), Stream: f.Str("stream", true, MaxStreamLen)}
	return r, f.Err()
}
