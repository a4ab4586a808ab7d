package models

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func copyModel(t *testing.T, name string) string {
	t.Helper()
	dir := t.TempDir()
	for _, ext := range []string{".json", ".tflite"} {
		b, err := os.ReadFile(name + ext)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(name)+ext), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, filepath.Base(name))
}

// TestVerifyRefusesWithDistinctErrors: a signed model verifies against its
// key; unsigned, unknown-key and tampered models are each refused with
// their own error; allow-unsigned lets unsigned and unknown-key models in
// but never a bad signature.
func TestVerifyRefusesWithDistinctErrors(t *testing.T) {
	base := copyModel(t, "pump8")
	pub, priv, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	other, _, _ := GenerateKey()
	trust := Trust{Keys: []ed25519.PublicKey{other, pub}}

	if _, err := VerifyFiles(base, trust); !errors.Is(err, ErrUnsigned) {
		t.Fatalf("unsigned: %v, want ErrUnsigned", err)
	}
	if v, err := VerifyFiles(base, Trust{AllowUnsigned: true}); err != nil || v.Key != nil {
		t.Fatalf("unsigned, allowed: %+v, %v", v, err)
	}
	if _, err := SignFiles(base, priv); err != nil {
		t.Fatal(err)
	}
	if v, err := VerifyFiles(base, trust); err != nil || !v.Key.Equal(pub) {
		t.Fatalf("signed: %+v, %v", v, err)
	}
	if _, err := VerifyFiles(base, Trust{Keys: []ed25519.PublicKey{other}}); !errors.Is(err, ErrUnknownKey) {
		t.Fatalf("another key: %v, want ErrUnknownKey", err)
	}
	if _, err := VerifyFiles(base, Trust{Keys: []ed25519.PublicKey{other}, AllowUnsigned: true}); err != nil {
		t.Fatalf("another key, unsigned allowed: %v", err)
	}
	// The manifest changed after signing (a threshold, one byte).
	man, _ := os.ReadFile(base + ".json")
	tampered := bytes.Replace(man, []byte(`"threshold"`), []byte(`"threshold" `), 1)
	if bytes.Equal(tampered, man) {
		t.Fatal("no threshold in the manifest")
	}
	os.WriteFile(base+".json", tampered, 0o644)
	for _, tr := range []Trust{trust, {Keys: trust.Keys, AllowUnsigned: true}} {
		if _, err := VerifyFiles(base, tr); !errors.Is(err, ErrBadSignature) {
			t.Fatalf("tampered manifest (allow unsigned %v): %v, want ErrBadSignature", tr.AllowUnsigned, err)
		}
	}
	os.WriteFile(base+".json", man, 0o644)
	// The model changed: the manifest's sha256 no longer matches.
	tfl, _ := os.ReadFile(base + ".tflite")
	tfl[len(tfl)/2] ^= 1
	os.WriteFile(base+".tflite", tfl, 0o644)
	if _, err := VerifyFiles(base, trust); !errors.Is(err, ErrChecksum) {
		t.Fatalf("altered model: %v, want ErrChecksum", err)
	}
	// A signature file that is not one.
	os.WriteFile(base+".sig", []byte(`{"key":"x"}`), 0o644)
	if _, err := VerifyFiles(base, trust); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("garbage signature: %v, want ErrBadSignature", err)
	}
}

func TestKeysRoundTrip(t *testing.T) {
	pub, priv, _ := GenerateKey()
	p, err := ParsePublicKey(EncodePublicKey(pub) + "\n")
	if err != nil || !p.Equal(pub) {
		t.Fatalf("public: %v", err)
	}
	k, err := ParsePrivateKey(EncodePrivateKey(priv))
	if err != nil || !k.Equal(priv) {
		t.Fatalf("private: %v", err)
	}
	for _, bad := range []string{"", "!!", EncodePublicKey(pub)[:40], EncodePrivateKey(priv) + "AAAA"} {
		if _, err := ParsePublicKey(bad); err == nil {
			t.Errorf("ParsePublicKey(%q) accepted", bad)
		}
	}
}

// FuzzDecodeSignature: never panics; what it accepts re-encodes to the same.
func FuzzDecodeSignature(f *testing.F) {
	pub, priv, _ := GenerateKey()
	f.Add(SignManifest([]byte("{}"), priv).Encode())
	f.Add([]byte(`{"key":"` + EncodePublicKey(pub) + `","sig":"AAAA"}`))
	f.Add([]byte(`{"key":1}`))
	f.Add([]byte(`{"key":"","sig":"","x":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeSignature(b)
		if err != nil {
			return
		}
		if len(s.Key) != ed25519.PublicKeySize || len(s.Sig) != ed25519.SignatureSize {
			t.Fatalf("accepted %d-byte key, %d-byte sig", len(s.Key), len(s.Sig))
		}
		again, err := DecodeSignature(s.Encode())
		if err != nil || !again.Key.Equal(s.Key) || !bytes.Equal(again.Sig, s.Sig) {
			t.Fatalf("round trip: %v", err)
		}
		VerifyManifest([]byte("{}"), b, Trust{Keys: []ed25519.PublicKey{pub}})
	})
}

// FuzzParseKeys: the key decoders never panic and accept only keys of the
// right size.
func FuzzParseKeys(f *testing.F) {
	pub, priv, _ := GenerateKey()
	f.Add(EncodePublicKey(pub))
	f.Add(EncodePrivateKey(priv) + "\n")
	f.Add("====")
	f.Fuzz(func(t *testing.T, s string) {
		if k, err := ParsePublicKey(s); err == nil && len(k) != ed25519.PublicKeySize {
			t.Fatalf("public key of %d bytes", len(k))
		}
		if k, err := ParsePrivateKey(s); err == nil && len(k) != ed25519.PrivateKeySize {
			t.Fatalf("private key of %d bytes", len(k))
		}
	})
}
