package daemon

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vigil-edge/vigil/agent/fleet"
	"github.com/vigil-edge/vigil/agent/internal/mqtttest"
	"github.com/vigil-edge/vigil/models"
)

const deployTopic = "vigil/test-device-01/cmd/deploy-model"

// newVersion writes pump8 as version v into a new directory, padded to
// size bytes when size > 0 (the padding makes a model TFLite would not run,
// for a model no stream serves), signed by key unless it is nil.
func newVersion(t *testing.T, v string, key ed25519.PrivateKey, name string, size int) string {
	t.Helper()
	m, tfl, err := models.ReadFiles(filepath.Join(repoModels, "pump8"))
	if err != nil {
		t.Fatal(err)
	}
	m.Version = v
	if size > len(tfl) {
		tfl = append(tfl, make([]byte, size-len(tfl))...)
	}
	dir := t.TempDir()
	if err := models.Save(dir, name, tfl, m); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if key != nil {
		if _, err := models.SignFiles(path, key); err != nil {
			t.Fatal(err)
		}
	}
	return path
}

// commandsReady waits until the daemon answers commands over the broker.
func commandsReady(t *testing.T, b *mqtttest.Broker) {
	t.Helper()
	sub := mqtttest.Subscribe(t, b, "vigil/test-device-01/cmd/status/reply", 1)
	c := mqtttest.Connect(t, b)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(60 * time.Second)
	for sub.Len() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the daemon does not answer commands")
		}
		c.Publish("vigil/test-device-01/cmd/status", 1, false, []byte(`{"id":"ping"}`))
		<-tick.C
	}
}

// sender signs its commands with key (deploy-model must be signed by
// default).
func sender(t *testing.T, b *mqtttest.Broker, key ed25519.PrivateKey) *fleet.Sender {
	return &fleet.Sender{Client: mqtttest.Connect(t, b), Topic: deployTopic, Timeout: 20 * time.Second, Key: key}
}

func deploy(t *testing.T, s *fleet.Sender, path string) (fleet.Result, error) {
	t.Helper()
	man, sig, tfl, err := fleet.ReadModel(path)
	if err != nil {
		t.Fatal(err)
	}
	m, err := models.DecodeManifest(man)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return s.Deploy(ctx, m.Name, m.Version, man, sig, tfl)
}

func deployConfig(t *testing.T, b *mqtttest.Broker, pub ed25519.PublicKey) (cfgPath, dataDir string) {
	t.Helper()
	return testConfig(t, 300, fmt.Sprintf("mqtt: {broker: %q, keepalive: 5s}\nmodels: {trusted_keys: [%q]}\n", b.URL(), models.EncodePublicKey(pub)))
}

// TestDeployModelOverMQTT (issue 18 item 1): a signed model larger than
// the broker's message_size_limit reaches the device in chunks through a
// real mosquitto; a chunk corrupted in flight is refused and sent again;
// the model lands in data_dir/models/NAME@VERSION with the sha256 the
// manifest pins, serves the stream whose config names it, and still does
// after a restart.
func TestDeployModelOverMQTT(t *testing.T) {
	if testing.Short() {
		t.Skip("mosquitto: not in -short")
	}
	b := mqtttest.Start(t, mqtttest.Options{ExtraConfig: "message_size_limit 100000\n"})
	pub, priv, _ := models.GenerateKey()
	cfgPath, dataDir := deployConfig(t, b, pub)
	d, stop := startDaemon(t, cfgPath)
	commandsReady(t, b)
	path := newVersion(t, "2", priv, "pump8", 0)
	if fi, _ := os.Stat(path + ".tflite"); fi.Size() <= 100000 {
		t.Fatalf("the model (%d bytes) fits in one message", fi.Size())
	}
	s := sender(t, b, priv)
	corrupted := 0
	s.Mangle = func(i, attempt int, data []byte) []byte {
		if i == 2 && attempt == 0 {
			corrupted++
			data[10] ^= 0xff
		}
		return data
	}
	res, err := deploy(t, s, path)
	if err != nil {
		t.Fatal(err)
	}
	if corrupted != 1 || res.Refused != 1 {
		t.Errorf("corrupted %d chunks, device refused %d; want 1 and 1", corrupted, res.Refused)
	}
	if !strings.Contains(res.Message, "serving stream pump1") {
		t.Fatalf("commit: %q", res.Message)
	}
	landed, _ := os.ReadFile(filepath.Join(dataDir, "models", "pump8@2", "pump8.tflite"))
	orig, _ := os.ReadFile(path + ".tflite")
	if sha256.Sum256(landed) != sha256.Sum256(orig) {
		t.Fatal("the landed model differs from the one sent")
	}
	if _, err := os.Stat(filepath.Join(dataDir, "deploy", "pump8@2")); !os.IsNotExist(err) {
		t.Errorf("the transfer directory is left behind: %v", err)
	}
	if e := d.effective()["pump1"]; e.Model != "pump8@2" || e.ModelFrom != "deployment" {
		t.Fatalf("after deploy: %+v", e)
	}
	if got := d.Health().Extra["deployments"].(map[string]string)["pump8@2"]; got != "serving pump1" {
		t.Errorf("health deployments: %q", got)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	d2, _ := startDaemon(t, cfgPath)
	if e := d2.effective()["pump1"]; e.Model != "pump8@2" || e.ModelFrom != "deployment" {
		t.Fatalf("after restart: %+v", e)
	}
}

// TestDeployModelRefusesUnsignedAndUntrusted: an unsigned model and one
// signed by another key are refused at begin, each saying why, and
// nothing lands; the configured model keeps serving.
func TestDeployModelRefusesUnsignedAndUntrusted(t *testing.T) {
	if testing.Short() {
		t.Skip("mosquitto: not in -short")
	}
	b := mqtttest.Start(t, mqtttest.Options{})
	pub, priv, _ := models.GenerateKey()
	_, other, _ := models.GenerateKey()
	cfgPath, dataDir := deployConfig(t, b, pub)
	d, _ := startDaemon(t, cfgPath)
	commandsReady(t, b)
	before := d.effective()["pump1"].Model
	for _, tt := range []struct {
		name, want string
		key        ed25519.PrivateKey
	}{
		{"unsigned", "refused: model is unsigned", nil},
		{"another key", "refused: model is signed by a key that is not trusted", other},
	} {
		_, err := deploy(t, sender(t, b, priv), newVersion(t, "3", tt.key, "pump8", 0))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
	// deploy-model must be signed by default (mqtt.commands.require_signature).
	if _, err := deploy(t, sender(t, b, nil), newVersion(t, "3", priv, "pump8", 0)); err == nil || !strings.Contains(err.Error(), "must be signed") {
		t.Errorf("unsigned commands: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dataDir, "models", "pump8@3")); !os.IsNotExist(err) {
		t.Errorf("a refused model landed: %v", err)
	}
	if e := d.effective()["pump1"]; e.Model != before || e.ModelFrom != "config" {
		t.Fatalf("after refusals: %+v", e)
	}
}

// TestDeployModelResumesAfterRestart: a transfer interrupted after three
// chunks, then a restart of the device, resumes: only the missing chunks
// are sent. The 1 MB model serves no stream (its name is no stream's), so
// it lands without being loaded.
func TestDeployModelResumesAfterRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("mosquitto: not in -short")
	}
	b := mqtttest.Start(t, mqtttest.Options{})
	pub, priv, _ := models.GenerateKey()
	cfgPath, dataDir := deployConfig(t, b, pub)
	_, stop := startDaemon(t, cfgPath)
	commandsReady(t, b)
	// A whole 1 MB transfer first, timed (loopback, fsync per landing).
	start := time.Now()
	if res, err := deploy(t, sender(t, b, priv), newVersion(t, "6", priv, "big", 1<<20)); err != nil || res.Sent != 16 {
		t.Fatalf("1 MB deployment: %+v, %v", res, err)
	}
	t.Logf("deployed 1 MB (16 chunks of 64 KiB, window 4) in %v", time.Since(start))
	path := newVersion(t, "7", priv, "big", 1<<20)
	s := sender(t, b, priv)
	s.Limit = 3
	if _, err := deploy(t, s, path); !fleet.IsStopped(err) {
		t.Fatalf("interrupted transfer: %v", err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	d2, _ := startDaemon(t, cfgPath)
	commandsReady(t, b)
	if got := d2.Health().Extra["deployments"].(map[string]string)["big@7"]; got != "receiving: 3 of 16 chunks" {
		t.Errorf("health after restart: %q", got)
	}
	start = time.Now()
	res, err := deploy(t, sender(t, b, priv), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("resumed: %d chunks of 64 KiB in %v", res.Sent, time.Since(start))
	if res.Sent != 13 {
		t.Errorf("sent %d chunks after the restart, want the 13 missing", res.Sent)
	}
	if !strings.Contains(res.Message, "no stream's config names model big") {
		t.Errorf("commit: %q", res.Message)
	}
	b1, _ := os.ReadFile(filepath.Join(dataDir, "models", "big@7", "big.tflite"))
	b2, _ := os.ReadFile(path + ".tflite")
	if len(b1) != 1<<20 || string(b1) != string(b2) {
		t.Fatal("the landed model differs from the one sent")
	}
}

// TestDeployCrashStates: what a crash leaves at each step of a commit
// (a landing cut short; a model landed but not yet recorded as serving)
// keeps the previous model serving after a restart, and commit completes
// the deployment afterwards.
func TestDeployCrashStates(t *testing.T) {
	pub, priv, _ := models.GenerateKey()
	cfgPath, dataDir := testConfig(t, 200, fmt.Sprintf("models: {trusted_keys: [%q]}\n", models.EncodePublicKey(pub)))
	path := newVersion(t, "5", priv, "pump8", 0)
	man, sig, tfl, _ := fleet.ReadModel(path)
	call := func(d *Daemon, m fleet.Deploy) string {
		t.Helper()
		m.ID, m.Name, m.Version = "x", "pump8", "5"
		rep := d.deploy.handle(context.Background(), m.Encode())
		if !rep.OK {
			t.Fatalf("%s: %s", m.Op, rep.Message)
		}
		return rep.Message
	}
	sum := sha256.Sum256(tfl)
	begin := fleet.Deploy{Op: fleet.OpBegin, Manifest: man, Signature: sig, Size: int64(len(tfl)), ChunkSize: fleet.DefaultChunk}
	begin.SHA256 = fmt.Sprintf("%x", sum)

	d, stop := startDaemon(t, cfgPath)
	configured := d.effective()["pump1"].Model
	call(d, begin)
	for i := range begin.Chunks() {
		data := tfl[i*fleet.DefaultChunk : min((i+1)*fleet.DefaultChunk, len(tfl))]
		cs := sha256.Sum256(data)
		call(d, fleet.Deploy{Op: fleet.OpChunk, Index: i, SHA256: fmt.Sprintf("%x", cs), Data: data})
	}
	// Crash 1: a landing cut short leaves a temporary directory.
	partial := filepath.Join(dataDir, "models", ".landing-123")
	os.MkdirAll(partial, 0o755)
	os.WriteFile(filepath.Join(partial, "pump8.tflite"), tfl[:1000], 0o644)
	stop()
	d, stop = startDaemon(t, cfgPath)
	if _, err := os.Stat(partial); !os.IsNotExist(err) {
		t.Fatalf("the cut-short landing is left: %v", err)
	}
	if e := d.effective()["pump1"]; e.Model != configured {
		t.Fatalf("after crash 1: %+v", e)
	}
	if msg := call(d, fleet.Deploy{Op: fleet.OpStatus}); !strings.HasSuffix(msg, "missing: ") {
		t.Fatalf("status after crash 1: %q", msg)
	}
	// Crash 2: the model landed, settings do not name it yet.
	dir := filepath.Join(dataDir, "deploy", "pump8@5")
	st, err := readDeployState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.deploy.land(dir, st, filepath.Join(dataDir, "models", "pump8@5")); err != nil {
		t.Fatal(err)
	}
	stop()
	d, _ = startDaemon(t, cfgPath)
	if e := d.effective()["pump1"]; e.Model != configured || e.ModelFrom != "config" {
		t.Fatalf("after crash 2: %+v", e)
	}
	if msg := call(d, fleet.Deploy{Op: fleet.OpCommit}); !strings.Contains(msg, "serving stream pump1") {
		t.Fatalf("commit after crash 2: %q", msg)
	}
	if e := d.effective()["pump1"]; e.Model != "pump8@5" || e.ModelFrom != "deployment" {
		t.Fatalf("after commit: %+v", e)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("transfer left: %v", err)
	}
	// reset returns to the configured model; the deployed one stays on disk.
	if rep := command(t, d, cmdReset, `{"id":"r","stream":"pump1"}`); !rep.OK || d.effective()["pump1"].Model != configured {
		t.Fatalf("reset: %+v, %+v", rep, d.effective()["pump1"])
	}
	if _, err := os.Stat(filepath.Join(dataDir, "models", "pump8@5", "pump8.tflite")); err != nil {
		t.Fatal(err)
	}
}

// deployDirect deploys the model at path through the deploy-model handler
// (as the publisher would run it, without a broker).
func deployDirect(t *testing.T, d *Daemon, path, version string) string {
	t.Helper()
	man, sig, tfl, err := fleet.ReadModel(path)
	if err != nil {
		t.Fatal(err)
	}
	var last string
	call := func(m fleet.Deploy) {
		t.Helper()
		m.ID, m.Name, m.Version = "x", "pump8", version
		rep := d.deploy.handle(context.Background(), m.Encode())
		if !rep.OK {
			t.Fatalf("%s: %s", m.Op, rep.Message)
		}
		last = rep.Message
	}
	sum := sha256.Sum256(tfl)
	begin := fleet.Deploy{Op: fleet.OpBegin, Manifest: man, Signature: sig, Size: int64(len(tfl)), ChunkSize: fleet.DefaultChunk, SHA256: fmt.Sprintf("%x", sum)}
	call(begin)
	for i := range begin.Chunks() {
		data := tfl[i*fleet.DefaultChunk : min((i+1)*fleet.DefaultChunk, len(tfl))]
		cs := sha256.Sum256(data)
		call(fleet.Deploy{Op: fleet.OpChunk, Index: i, SHA256: fmt.Sprintf("%x", cs), Data: data})
	}
	call(fleet.Deploy{Op: fleet.OpCommit})
	return last
}

// TestRollbackReturnsToThePreviousModel: after two deployments, rollback
// serves the first deployed model again, then the configured one; the
// choice survives a restart; with nothing deployed, rollback says so.
func TestRollbackReturnsToThePreviousModel(t *testing.T) {
	pub, priv, _ := models.GenerateKey()
	cfgPath, _ := testConfig(t, 200, fmt.Sprintf("models: {trusted_keys: [%q]}\n", models.EncodePublicKey(pub)))
	d, stop := startDaemon(t, cfgPath)
	configured := d.effective()["pump1"].Model
	deployDirect(t, d, newVersion(t, "5", priv, "pump8", 0), "5")
	deployDirect(t, d, newVersion(t, "6", priv, "pump8", 0), "6")
	if e := d.effective()["pump1"]; e.Model != "pump8@6" {
		t.Fatalf("after two deployments: %+v", e)
	}
	rep := command(t, d, cmdRollback, `{"id":"b1","stream":"pump1"}`)
	if !rep.OK || !strings.Contains(rep.Message, "rolled back from pump8@6 to pump8@5 (deployment)") {
		t.Fatalf("rollback: %+v", rep)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	d, _ = startDaemon(t, cfgPath)
	if e := d.effective()["pump1"]; e.Model != "pump8@5" || e.ModelFrom != "deployment" {
		t.Fatalf("after restart: %+v", e)
	}
	rep = command(t, d, cmdRollback, `{"id":"b2","stream":"pump1"}`)
	if !rep.OK || d.effective()["pump1"].Model != configured || d.effective()["pump1"].ModelFrom != "config" {
		t.Fatalf("second rollback: %+v, %+v", rep, d.effective()["pump1"])
	}
	if rep := command(t, d, cmdRollback, `{"id":"b3","stream":"pump1"}`); rep.OK || !strings.Contains(rep.Message, "nothing to roll back") {
		t.Fatalf("third rollback: %+v", rep)
	}
}
