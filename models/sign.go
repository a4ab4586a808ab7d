package models

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// Model signatures.
//
// A model is signed by signing its manifest, NAME.json, whose sha256 field
// pins NAME.tflite: the signature is ed25519 over signingDomain followed by
// the manifest's bytes exactly as they are in the file. It is stored beside
// the manifest as NAME.sig, one JSON object:
//
//	{"key":"<base64 public key>","sig":"<base64 signature>"}
//
// Keys are written by `vigil model keygen`: NAME.pub holds the public key as
// one line of standard base64 (32 bytes), NAME.key the private key's seed
// likewise (32 bytes, file mode 0600).

// signingDomain separates model signatures from any other use of a key.
const signingDomain = "vigil model manifest v1\n"

// Errors of VerifyManifest, each a distinct refusal.
var (
	// ErrUnsigned: the model carries no signature and unsigned models are
	// not allowed.
	ErrUnsigned = errors.New("model is unsigned")
	// ErrUnknownKey: the signature is by a key that is not trusted.
	ErrUnknownKey = errors.New("model is signed by a key that is not trusted")
	// ErrBadSignature: the signature does not match the manifest (the
	// manifest or the signature was altered, or the signature is not one).
	ErrBadSignature = errors.New("model signature does not verify")
)

// Signature is the content of NAME.sig.
type Signature struct {
	Key ed25519.PublicKey
	Sig []byte
}

// GenerateKey returns a new ed25519 key pair.
func GenerateKey() (ed25519.PublicKey, ed25519.PrivateKey, error) {
	return ed25519.GenerateKey(rand.Reader)
}

// EncodePublicKey returns a public key as NAME.pub holds it (no newline).
func EncodePublicKey(k ed25519.PublicKey) string { return base64.StdEncoding.EncodeToString(k) }

// EncodePrivateKey returns a private key as NAME.key holds it: its seed
// (no newline).
func EncodePrivateKey(k ed25519.PrivateKey) string {
	return base64.StdEncoding.EncodeToString(k.Seed())
}

// ParsePublicKey decodes a public key: standard base64 of 32 bytes, with
// surrounding white space allowed (a .pub file's newline).
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	b, err := decodeB64(s, ed25519.PublicKeySize)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	return ed25519.PublicKey(b), nil
}

// ParsePrivateKey decodes a private key file's content: standard base64
// of the 32-byte seed.
func ParsePrivateKey(s string) (ed25519.PrivateKey, error) {
	b, err := decodeB64(s, ed25519.SeedSize)
	if err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	return ed25519.NewKeyFromSeed(b), nil
}

func decodeB64(s string, size int) ([]byte, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("empty")
	}
	if len(s) > base64.StdEncoding.EncodedLen(size) {
		return nil, fmt.Errorf("%d characters: want the base64 of %d bytes", len(s), size)
	}
	b, err := base64.StdEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("not standard base64: %w", err)
	}
	if len(b) != size {
		return nil, fmt.Errorf("%d bytes: want %d", len(b), size)
	}
	return b, nil
}

// SignManifest signs a manifest's bytes.
func SignManifest(manifest []byte, key ed25519.PrivateKey) Signature {
	pub := key.Public().(ed25519.PublicKey)
	return Signature{Key: pub, Sig: ed25519.Sign(key, signed(manifest))}
}

func signed(manifest []byte) []byte {
	return append([]byte(signingDomain), manifest...)
}

// Encode returns NAME.sig's content.
func (s Signature) Encode() []byte {
	b, _ := json.Marshal(struct {
		Key string `json:"key"`
		Sig string `json:"sig"`
	}{EncodePublicKey(s.Key), base64.StdEncoding.EncodeToString(s.Sig)})
	return append(b, '\n')
}

// MaxSignatureBytes bounds a NAME.sig file.
const MaxSignatureBytes = 1024

// DecodeSignature decodes NAME.sig strictly: one JSON object with exactly
// "key" and "sig", each standard base64 of the right length.
func DecodeSignature(b []byte) (Signature, error) {
	if len(b) > MaxSignatureBytes {
		return Signature{}, fmt.Errorf("signature: %d bytes exceeds %d", len(b), MaxSignatureBytes)
	}
	var raw struct {
		Key *string `json:"key"`
		Sig *string `json:"sig"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&raw); err != nil {
		return Signature{}, fmt.Errorf("signature: %w", err)
	}
	if dec.More() {
		return Signature{}, errors.New("signature: data after the object")
	}
	if raw.Key == nil || raw.Sig == nil {
		return Signature{}, errors.New(`signature: want "key" and "sig"`)
	}
	k, err := ParsePublicKey(*raw.Key)
	if err != nil {
		return Signature{}, fmt.Errorf("signature: key: %w", err)
	}
	s, err := decodeB64(*raw.Sig, ed25519.SignatureSize)
	if err != nil {
		return Signature{}, fmt.Errorf("signature: sig: %w", err)
	}
	return Signature{Key: k, Sig: s}, nil
}

// Trust is what a device accepts.
type Trust struct {
	Keys          []ed25519.PublicKey
	AllowUnsigned bool
}

// Verified says how a manifest was accepted.
type Verified struct {
	// Key is the trusted key that signed it; nil when it was accepted
	// unsigned (Trust.AllowUnsigned).
	Key ed25519.PublicKey
}

// VerifyManifest checks sig (nil: no NAME.sig) over manifest against t.
// It refuses, with errors wrapping ErrUnsigned, ErrUnknownKey or
// ErrBadSignature:
//   - an unsigned model, unless t.AllowUnsigned;
//   - a signature by a key not in t.Keys, unless t.AllowUnsigned (the
//     model is then accepted as unsigned);
//   - a signature that does not verify, always: a model whose signature was
//     tampered with is not accepted as unsigned either.
func VerifyManifest(manifest, sig []byte, t Trust) (Verified, error) {
	if sig == nil {
		if t.AllowUnsigned {
			return Verified{}, nil
		}
		return Verified{}, ErrUnsigned
	}
	s, err := DecodeSignature(sig)
	if err != nil {
		return Verified{}, fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	if !ed25519.Verify(s.Key, signed(manifest), s.Sig) {
		return Verified{}, fmt.Errorf("%w (key %s)", ErrBadSignature, EncodePublicKey(s.Key))
	}
	for _, k := range t.Keys {
		if k.Equal(s.Key) {
			return Verified{Key: k}, nil
		}
	}
	if t.AllowUnsigned {
		return Verified{}, nil
	}
	return Verified{}, fmt.Errorf("%w: %s", ErrUnknownKey, EncodePublicKey(s.Key))
}

// VerifyFiles verifies the model at path (NAME, NAME.json or NAME.tflite):
// NAME.sig over NAME.json against t, and NAME.tflite against the manifest's
// sha256 (ReadFiles).
func VerifyFiles(path string, t Trust) (Verified, error) {
	base := strings.TrimSuffix(strings.TrimSuffix(path, ".json"), ".tflite")
	man, err := os.ReadFile(base + ".json")
	if err != nil {
		return Verified{}, fmt.Errorf("verify model %s: %w", base, err)
	}
	sig, err := os.ReadFile(base + ".sig")
	if errors.Is(err, fs.ErrNotExist) {
		sig, err = nil, nil
	}
	if err != nil {
		return Verified{}, fmt.Errorf("verify model %s: %w", base, err)
	}
	v, err := VerifyManifest(man, sig, t)
	if err != nil {
		return Verified{}, fmt.Errorf("verify model %s: %w", filepath.Base(base), err)
	}
	if _, _, err := ReadFiles(base); err != nil {
		return Verified{}, err
	}
	return v, nil
}

// SignFiles signs the manifest of the model at path with key and writes
// NAME.sig beside it (atomically); it checks the model first (ReadFiles).
func SignFiles(path string, key ed25519.PrivateKey) (string, error) {
	base := strings.TrimSuffix(strings.TrimSuffix(path, ".json"), ".tflite")
	if _, _, err := ReadFiles(base); err != nil {
		return "", err
	}
	man, err := os.ReadFile(base + ".json")
	if err != nil {
		return "", err
	}
	out := base + ".sig"
	if err := writeFile(out, SignManifest(man, key).Encode()); err != nil {
		return "", fmt.Errorf("sign model %s: %w", base, err)
	}
	return out, nil
}
