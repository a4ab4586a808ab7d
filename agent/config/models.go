package config

import (
	"crypto/ed25519"
	"fmt"
	"os"
	"strings"

	"github.com/vigil-edge/vigil/models"
)

// maxKeyFile bounds a .pub file named by models.trusted_keys.
const maxKeyFile = 4096

// Trust returns the keys of models.trusted_keys, each decoded (and read
// from its file for "@path"), and models.allow_unsigned. The error names
// the key path of the first key that does not decode.
func (m Models) Trust() (models.Trust, error) {
	t := models.Trust{AllowUnsigned: m.AllowUnsigned}
	for i, s := range m.TrustedKeys {
		k, err := readKey(s)
		if err != nil {
			return models.Trust{}, fmt.Errorf("models.trusted_keys[%d]: %w", i, err)
		}
		t.Keys = append(t.Keys, k)
	}
	return t, nil
}

func readKey(s string) (ed25519.PublicKey, error) {
	if path, ok := strings.CutPrefix(s, "@"); ok {
		fi, err := os.Stat(path)
		if err != nil {
			return nil, err
		}
		if fi.Size() > maxKeyFile {
			return nil, fmt.Errorf("%s: %d bytes is not a .pub file", path, fi.Size())
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		k, err := models.ParsePublicKey(string(b))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		return k, nil
	}
	return models.ParsePublicKey(s)
}

// models checks models.trusted_keys: every key decodes, none twice.
func (v *validator) models() {
	seen := map[string]int{}
	for i, s := range v.c.Models.TrustedKeys {
		p := fmt.Sprintf("models.trusted_keys[%d]", i)
		k, err := readKey(s)
		if err != nil {
			v.errf(p, "%v", err)
			continue
		}
		enc := models.EncodePublicKey(k)
		if j, ok := seen[enc]; ok {
			v.warnf(p, "the same key as models.trusted_keys[%d]", j)
		}
		seen[enc] = i
	}
	sh := v.c.Models.Shadow
	v.atLeast("models.shadow.windows", sh.Windows, 0)
	v.nonNegative("models.shadow.duration", sh.Duration)
	if v.finite("models.shadow.max_alert_rate", sh.MaxAlertRate) && (sh.MaxAlertRate < 0 || sh.MaxAlertRate > 1) {
		v.errf("models.shadow.max_alert_rate", "must be within [0, 1], got %v", sh.MaxAlertRate)
	}
	if v.finite("models.shadow.max_alert_ratio", sh.MaxAlertRatio) && sh.MaxAlertRatio < 0 {
		v.errf("models.shadow.max_alert_ratio", "must not be negative, got %v", sh.MaxAlertRatio)
	}
	if v.c.Models.AllowUnsigned {
		v.warnf("models.allow_unsigned", "deployed models are accepted without a trusted signature")
	}
}
