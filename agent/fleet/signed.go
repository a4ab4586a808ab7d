package fleet

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/vigil-edge/vigil/models"
)

// Signed commands.
//
// A signed command is published as an envelope instead of the command's
// own payload:
//
//	{"payload":"<the command's JSON>","ts":"<RFC 3339 time>","nonce":"<32 hex>","key":"<base64 public key>","sig":"<base64 signature>"}
//
// sig is ed25519 over "vigil command v1\n" + device + "\n" + command name +
// "\n" + ts + "\n" + nonce + "\n" + payload, so a signed command is good
// for one device, one command, a short time, and once.

// Signed is a decoded envelope.
type Signed struct {
	Payload []byte
	TS      string
	Time    time.Time
	Nonce   string
	Key     ed25519.PublicKey
	Sig     []byte
}

const commandDomain = "vigil command v1\n"

func commandBytes(device, name, ts, nonce string, payload []byte) []byte {
	b := []byte(commandDomain + device + "\n" + name + "\n" + ts + "\n" + nonce + "\n")
	return append(b, payload...)
}

// SignCommand wraps payload, the command name's payload for device, in a
// signed envelope dated now.
func SignCommand(key ed25519.PrivateKey, device, name string, payload []byte, now time.Time) []byte {
	var n [16]byte
	rand.Read(n[:])
	nonce := hex.EncodeToString(n[:])
	ts := now.UTC().Format(time.RFC3339Nano)
	sig := ed25519.Sign(key, commandBytes(device, name, ts, nonce, payload))
	b, _ := json.Marshal(map[string]string{
		"payload": string(payload), "ts": ts, "nonce": nonce,
		"key": models.EncodePublicKey(key.Public().(ed25519.PublicKey)), "sig": base64.StdEncoding.EncodeToString(sig),
	})
	return b
}

// IsSigned reports whether payload is an envelope: a JSON object with a
// "sig" member at its top level.
func IsSigned(payload []byte) bool {
	if len(payload) > MaxPayload {
		return false
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(payload, &m) != nil {
		return false
	}
	_, ok := m["sig"]
	return ok
}

// DecodeSigned decodes an envelope strictly.
func DecodeSigned(payload []byte) (Signed, error) {
	f, err := object(payload, "payload", "ts", "nonce", "key", "sig")
	if err != nil {
		return Signed{}, err
	}
	var s Signed
	if v, ok := f.Raw("payload", true); ok {
		var p string
		if json.Unmarshal(v, &p) != nil || p == "" {
			f.Bad("payload", "want the command's JSON as a non-empty string")
		}
		s.Payload = []byte(p)
	}
	s.TS = f.Str("ts", true, 64)
	if s.TS != "" {
		t, err := time.Parse(time.RFC3339Nano, s.TS)
		if err != nil {
			f.Bad("ts", "not an RFC 3339 time")
		}
		s.Time = t
	}
	s.Nonce = f.Str("nonce", true, 64)
	if b, err := hex.DecodeString(s.Nonce); s.Nonce != "" && (err != nil || len(b) < 8) {
		f.Bad("nonce", "want at least 16 hex digits")
	}
	if k := f.Str("key", true, 64); k != "" {
		pk, err := models.ParsePublicKey(k)
		if err != nil {
			f.Bad("key", "%v", err)
		}
		s.Key = pk
	}
	if sg := f.Str("sig", true, 128); sg != "" {
		b, err := base64.StdEncoding.Strict().DecodeString(sg)
		if err != nil || len(b) != ed25519.SignatureSize {
			f.Bad("sig", "want the base64 of a %d-byte signature", ed25519.SignatureSize)
		}
		s.Sig = b
	}
	return s, f.Err()
}

// ErrCommandSignature is wrapped by Verify's error.
var ErrCommandSignature = errors.New("command signature does not verify")

// Verify checks the signature for device and command name (not the key's
// trust, the time or the nonce: the device does those).
func (s Signed) Verify(device, name string) error {
	if len(s.Key) != ed25519.PublicKeySize || !ed25519.Verify(s.Key, commandBytes(device, name, s.TS, s.Nonce, s.Payload), s.Sig) {
		return fmt.Errorf("%w (for device %s, command %s)", ErrCommandSignature, device, name)
	}
	return nil
}
