package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/fleet"
	"github.com/vigil-edge/vigil/agent/internal/mqtttest"
	"github.com/vigil-edge/vigil/agent/record"
	"github.com/vigil-edge/vigil/models"
)

// scoreModels collects the model of each score of stream pump1.
func scoreModels(t *testing.T, msgs []mqtttest.Message) map[string]int {
	t.Helper()
	out := map[string]int{}
	for _, m := range msgs {
		var s record.Score
		if err := json.Unmarshal(m.Payload, &s); err != nil {
			t.Fatal(err)
		}
		out[s.Model]++
	}
	return out
}

// TestDeploySIGKILLMidTransfer (issue 18 item 1, "a SIGKILL at any
// moment"): a real vigil process is killed with SIGKILL halfway through a
// signed deployment over mosquitto. Nothing partial is left in
// data_dir/models; the chunks stored before the kill are whole; the
// restarted process serves the previous model meanwhile, resumes the
// transfer (only the missing chunks are sent) and then serves the new
// model.
func TestDeploySIGKILLMidTransfer(t *testing.T) {
	if testing.Short() {
		t.Skip("mosquitto and a vigil process killed with SIGKILL: not in -short")
	}
	b := mqtttest.Start(t, mqtttest.Options{})
	pub, priv, _ := models.GenerateKey()
	cfgPath, dataDir := simConfig(t, fmt.Sprintf("mqtt: {broker: %q, keepalive: 5s}\nmodels: {trusted_keys: [%q]}\n", b.URL(), models.EncodePublicKey(pub)))
	configured := configuredModel(t)
	logPath := filepath.Join(t.TempDir(), "vigil.log")
	scores := mqtttest.Subscribe(t, b, "vigil/test-device-01/scores/pump1", 1)

	first := startVigil(t, "", cfgPath, logPath)
	commandsReady(t, b)
	path := newVersion(t, "5", priv, "pump8", 0)
	man, sig, tfl, err := fleet.ReadModel(path)
	if err != nil {
		t.Fatal(err)
	}
	const chunk = 32 << 10
	total := (len(tfl) + chunk - 1) / chunk
	s := sender(t, b, priv)
	s.ChunkSize, s.Timeout = chunk, 2*time.Second
	killed := false
	s.Mangle = func(i, _ int, data []byte) []byte {
		if i == total/2 && !killed {
			killed = true
			if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
				t.Error(err)
			}
		}
		return data
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	_, err = s.Deploy(ctx, "pump8", "5", man, sig, tfl)
	cancel()
	if !killed || err == nil {
		t.Fatalf("the transfer was not cut by the kill: killed %v, %v", killed, err)
	}
	<-first.exited

	// After the kill: nothing partial among the models; whole chunks only.
	ents, _ := os.ReadDir(filepath.Join(dataDir, "models"))
	for _, e := range ents {
		t.Fatalf("data_dir/models holds %s after a kill mid-transfer", e.Name())
	}
	chunks, _ := os.ReadDir(filepath.Join(dataDir, "deploy", "pump8@5", "chunks"))
	stored := 0
	for _, e := range chunks {
		i, err := strconv.Atoi(e.Name())
		if err != nil {
			continue // a chunk's temporary file, cut by the kill: ignored, sent again
		}
		got, _ := os.ReadFile(filepath.Join(dataDir, "deploy", "pump8@5", "chunks", e.Name()))
		if want := tfl[i*chunk : min((i+1)*chunk, len(tfl))]; sha256.Sum256(got) != sha256.Sum256(want) {
			t.Fatalf("chunk %d on disk differs from the one sent", i)
		}
		stored++
	}
	if stored == 0 || stored >= total {
		t.Fatalf("%d of %d chunks stored at the kill", stored, total)
	}

	// Restarted: the previous model serves while the transfer is resumed.
	startVigil(t, "", cfgPath, logPath)
	commandsReady(t, b)
	scores.Reset()
	waitFor(t, 30*time.Second, func() bool { return scores.Len() >= 20 })
	if got := scoreModels(t, scores.Messages()); got[configured] == 0 || got["pump8@5"] > 0 {
		t.Fatalf("after the restart, scores by model %v, want %s only", got, configured)
	}
	s = sender(t, b, priv)
	s.ChunkSize = chunk
	start := time.Now()
	res, err := deploy(t, s, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("killed after %d of %d chunks; resumed with %d chunks and committed in %v", stored, total, res.Sent, time.Since(start).Round(time.Millisecond))
	if res.Sent != total-stored || !strings.Contains(res.Message, "serving stream pump1") {
		t.Fatalf("resumed: %+v, want %d chunks sent", res, total-stored)
	}
	landed, err := os.ReadFile(filepath.Join(dataDir, "models", "pump8@5", "pump8.tflite"))
	if err != nil || sha256.Sum256(landed) != sha256.Sum256(tfl) {
		t.Fatalf("the landed model differs from the one sent (%v)", err)
	}
	scores.Reset()
	waitFor(t, 30*time.Second, func() bool { return scoreModels(t, scores.Messages())["pump8@5"] >= 10 })
}

// configuredModel is the name@version of the repository's pump8.
func configuredModel(t *testing.T) string {
	t.Helper()
	m, _, err := models.ReadFiles(filepath.Join(repoModels, "pump8"))
	if err != nil {
		t.Fatal(err)
	}
	return m.Name + "@" + m.Version
}
