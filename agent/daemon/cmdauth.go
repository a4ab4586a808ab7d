package daemon

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/vigil-edge/vigil/agent/fleet"
)

// Signed commands (mqtt.commands.require_signature): a command listed
// there must come in a signed envelope (agent/fleet, signed.go) by a key
// of models.trusted_keys, dated within maxCommandAge of the device's clock,
// with a nonce never seen before. Nonces are remembered in
// data_dir/nonces.json (atomic writes) for twice maxCommandAge, so a
// replay is refused across restarts too. A signed command not listed is
// checked the same way.

const maxCommandAge = 5 * time.Minute

type cmdAuth struct {
	d    *Daemon
	path string
	now  func() time.Time

	mu     sync.Mutex
	nonces map[string]int64 // nonce → unix time of the command
}

func loadCmdAuth(d *Daemon, dataDir string) *cmdAuth {
	a := &cmdAuth{d: d, path: filepath.Join(dataDir, "nonces.json"), now: time.Now, nonces: map[string]int64{}}
	b, err := os.ReadFile(a.path)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		d.log.Error("reading the command nonces", "err", err)
	}
	if err == nil {
		if err := json.Unmarshal(b, &a.nonces); err != nil {
			d.log.Error("command nonces unreadable: starting afresh", "err", err)
			a.nonces = map[string]int64{}
		}
	}
	return a
}

// verify is the publisher's CommandVerifier.
func (a *cmdAuth) verify(name string, payload []byte) ([]byte, error) {
	cfg := a.d.config()
	if !fleet.IsSigned(payload) {
		if slices.Contains(cfg.MQTT.Commands.RequireSignature, name) {
			return nil, fmt.Errorf("refused: command %s must be signed (mqtt.commands.require_signature)", name)
		}
		return payload, nil
	}
	s, err := fleet.DecodeSigned(payload)
	if err != nil {
		return nil, fmt.Errorf("refused: signed envelope: %w", err)
	}
	refuse := func(err error) ([]byte, error) { return s.Payload, err }
	trust, err := cfg.Models.Trust()
	if err != nil {
		return refuse(fmt.Errorf("refused: %w", err))
	}
	if !slices.ContainsFunc(trust.Keys, func(k ed25519.PublicKey) bool { return k.Equal(s.Key) }) {
		return refuse(errors.New("refused: command signed by a key that is not trusted"))
	}
	if err := s.Verify(cfg.DeviceID, name); err != nil {
		return refuse(fmt.Errorf("refused: %w", err))
	}
	now := a.now()
	if d := now.Sub(s.Time); d > maxCommandAge || d < -maxCommandAge {
		return refuse(fmt.Errorf("refused: stale command (dated %s, %v from the device's clock; at most %v)", s.TS, d.Round(time.Second), maxCommandAge))
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, seen := a.nonces[s.Nonce]; seen {
		return refuse(errors.New("refused: replayed command (nonce already used)"))
	}
	next := make(map[string]int64, len(a.nonces)+1)
	for k, t := range a.nonces {
		if now.Sub(time.Unix(t, 0)) <= 2*maxCommandAge {
			next[k] = t
		}
	}
	next[s.Nonce] = s.Time.Unix()
	b, _ := json.Marshal(next)
	if err := writeFileAtomic(a.path, b, 0o600); err != nil {
		return refuse(fmt.Errorf("refused: the nonce cannot be stored: %w", err))
	}
	a.nonces = next
	return s.Payload, nil
}
