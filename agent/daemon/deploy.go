package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/vigil-edge/vigil/agent/fleet"
	"github.com/vigil-edge/vigil/agent/internal/fsx"
	"github.com/vigil-edge/vigil/agent/publish"
	"github.com/vigil-edge/vigil/models"
)

// Deployment over MQTT (the deploy-model command; see agent/fleet for the
// payloads and docs/fleet-models.md).
//
// A transfer lives in data_dir/deploy/NAME@VERSION/: transfer.json (what
// begin stated), NAME.json and NAME.sig (the manifest and its signature,
// checked against models.trusted_keys at begin and again at commit) and
// chunks/INDEX, each written to a temporary file and renamed once its
// sha256 matched. A transfer survives a disconnect and a restart: begin
// again with the same statement, or status, says which chunks are missing.
//
// commit assembles NAME.tflite in a temporary directory under
// data_dir/models/, checks its sha256 against the manifest, fsyncs it and
// renames the directory to data_dir/models/NAME@VERSION; only then does
// settings.json record that the streams whose config names model NAME serve
// it, and the pipeline is rebuilt. A SIGKILL at any moment leaves either
// the previous model serving (with the transfer resumable, or landed and
// committable again) or the new one: never a half-written model.

const cmdDeploy = "deploy-model"

// deployState is the state of one transfer, in data_dir/deploy/REF/transfer.json.
type deployState struct {
	Name      string    `json:"name"`
	Version   string    `json:"version"`
	Size      int64     `json:"size"`
	SHA256    string    `json:"sha256"`
	ChunkSize int       `json:"chunk_size"`
	Signed    string    `json:"signed_by,omitempty"` // base64 public key; "" when accepted unsigned
	Began     time.Time `json:"began"`
}

func (s deployState) chunks() int {
	return fleet.Deploy{Size: s.Size, ChunkSize: s.ChunkSize}.Chunks()
}

// deployer carries out deploy-model. Its methods run on the command
// goroutine, one at a time; progress is read by health concurrently.
type deployer struct {
	d *Daemon

	mu       sync.Mutex
	outcomes map[string]string // ref → last outcome, for health
}

func (d *Daemon) deployDir() string { return filepath.Join(d.config().DataDir, "deploy") }
func (d *Daemon) landedDir() string { return filepath.Join(d.config().DataDir, "models") }

func (dp *deployer) handle(ctx context.Context, payload []byte) publish.Reply {
	m, err := fleet.DecodeDeploy(payload)
	if err != nil {
		return publish.Reply{ID: fleet.RequestID(payload), Message: "invalid deploy-model command: " + err.Error()}
	}
	var msg string
	switch m.Op {
	case fleet.OpBegin:
		msg, err = dp.begin(m)
	case fleet.OpChunk:
		msg, err = dp.chunk(m)
	case fleet.OpStatus:
		msg, err = dp.status(m.Ref())
	case fleet.OpCommit:
		msg, err = dp.commit(ctx, m.Ref())
	case fleet.OpAbort:
		err = os.RemoveAll(filepath.Join(dp.d.deployDir(), m.Ref()))
		msg = m.Ref() + ": transfer abandoned"
	}
	if err != nil {
		dp.outcome(m.Ref(), "failed: "+err.Error())
		dp.d.log.Warn("deploy-model", "op", m.Op, "model", m.Ref(), "err", err)
		return publish.Reply{ID: m.ID, Message: m.Ref() + ": " + err.Error()}
	}
	if m.Op != fleet.OpChunk {
		dp.d.log.Info("deploy-model", "op", m.Op, "model", m.Ref(), "outcome", msg)
	}
	return publish.Reply{ID: m.ID, OK: true, Message: msg}
}

func (dp *deployer) outcome(ref, s string) {
	dp.mu.Lock()
	defer dp.mu.Unlock()
	if dp.outcomes == nil {
		dp.outcomes = map[string]string{}
	}
	dp.outcomes[ref] = s
}

// begin checks the statement, the manifest and its signature, and starts
// the transfer, or resumes it when the same one was begun before.
func (dp *deployer) begin(m fleet.Deploy) (string, error) {
	man, err := models.DecodeManifest(m.Manifest)
	if err != nil {
		return "", fmt.Errorf("refused: manifest: %w", err)
	}
	if err := man.Validate(); err != nil {
		return "", fmt.Errorf("refused: manifest: %w", err)
	}
	if man.Name != m.Name || man.Version != m.Version {
		return "", fmt.Errorf("refused: the manifest is %s@%s", man.Name, man.Version)
	}
	if man.SHA256 != m.SHA256 {
		return "", fmt.Errorf("refused: the manifest pins sha256 %s, the transfer states %s", man.SHA256, m.SHA256)
	}
	trust, err := dp.d.config().Models.Trust()
	if err != nil {
		return "", fmt.Errorf("refused: %w", err)
	}
	v, err := models.VerifyManifest(m.Manifest, m.Signature, trust)
	if err != nil {
		return "", fmt.Errorf("refused: %w", err)
	}
	st := deployState{Name: m.Name, Version: m.Version, Size: m.Size, SHA256: m.SHA256, ChunkSize: m.ChunkSize, Began: time.Now().UTC()}
	if v.Key != nil {
		st.Signed = models.EncodePublicKey(v.Key)
	}
	dir := filepath.Join(dp.d.deployDir(), m.Ref())
	if old, err := readDeployState(dir); err == nil {
		same, _ := os.ReadFile(filepath.Join(dir, m.Name+".json"))
		if old.Size == st.Size && old.SHA256 == st.SHA256 && old.ChunkSize == st.ChunkSize && string(same) == string(m.Manifest) {
			msg, err := dp.status(m.Ref())
			return "resumed; " + msg, err
		}
	}
	// A new transfer (or another statement for the same ref): start afresh.
	if err := os.RemoveAll(dir); err != nil {
		return "", err
	}
	if err := os.MkdirAll(filepath.Join(dir, "chunks"), 0o755); err != nil {
		return "", err
	}
	if err := writeFileAtomic(filepath.Join(dir, m.Name+".json"), m.Manifest, 0o644); err != nil {
		return "", err
	}
	if m.Signature != nil {
		if err := writeFileAtomic(filepath.Join(dir, m.Name+".sig"), m.Signature, 0o644); err != nil {
			return "", err
		}
	}
	b, _ := json.Marshal(st)
	if err := writeFileAtomic(filepath.Join(dir, "transfer.json"), b, 0o644); err != nil {
		return "", err
	}
	signed := "unsigned (models.allow_unsigned)"
	if st.Signed != "" {
		signed = "signed by " + st.Signed
	}
	dp.outcome(m.Ref(), "receiving")
	return fmt.Sprintf("%s: transfer begun, %d chunks of %d bytes, %s", m.Ref(), st.chunks(), st.ChunkSize, signed), nil
}

func readDeployState(dir string) (deployState, error) {
	var st deployState
	b, err := os.ReadFile(filepath.Join(dir, "transfer.json"))
	if err != nil {
		return st, err
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("transfer.json: %w", err)
	}
	if st.ChunkSize < fleet.MinChunk || st.Size <= 0 {
		return st, errors.New("transfer.json: bad sizes")
	}
	return st, nil
}

var errAlreadyLanded = errors.New("already landed (no transfer in progress)")

// transfer returns the state of a begun transfer.
func (dp *deployer) transfer(ref string) (string, deployState, error) {
	dir := filepath.Join(dp.d.deployDir(), ref)
	st, err := readDeployState(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if _, err := os.Stat(filepath.Join(dp.d.landedDir(), ref)); err == nil {
			return dir, st, errAlreadyLanded
		}
		return dir, st, errors.New("no such transfer: send begin first")
	}
	return dir, st, err
}

// chunk stores one chunk once its size and sha256 match.
func (dp *deployer) chunk(m fleet.Deploy) (string, error) {
	dir, st, err := dp.transfer(m.Ref())
	if err != nil {
		return "", err
	}
	n := st.chunks()
	if m.Index >= n {
		return "", fmt.Errorf("chunk %d: the transfer has %d chunks", m.Index, n)
	}
	want := int64(st.ChunkSize)
	if m.Index == n-1 {
		want = st.Size - int64(n-1)*int64(st.ChunkSize)
	}
	if int64(len(m.Data)) != want {
		return "", fmt.Errorf("chunk %d refused: %d bytes, want %d", m.Index, len(m.Data), want)
	}
	if sum := sha256.Sum256(m.Data); hex.EncodeToString(sum[:]) != m.SHA256 {
		return "", fmt.Errorf("chunk %d refused: sha256 %s does not match the data (%s): send it again", m.Index, m.SHA256, hex.EncodeToString(sum[:]))
	}
	path := filepath.Join(dir, "chunks", strconv.Itoa(m.Index))
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, m.Data, 0o644); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", err
	}
	missing := missingChunks(dir, n)
	dp.outcome(m.Ref(), fmt.Sprintf("receiving: %d of %d chunks", n-len(missing), n))
	return fmt.Sprintf("%s: chunk %d stored; %d of %d chunks stored", m.Ref(), m.Index, n-len(missing), n), nil
}

// missingChunks lists the chunks of a transfer not stored yet.
func missingChunks(dir string, n int) []int {
	have := make([]bool, n)
	ents, _ := os.ReadDir(filepath.Join(dir, "chunks"))
	for _, e := range ents {
		if i, err := strconv.Atoi(e.Name()); err == nil && i >= 0 && i < n {
			have[i] = true
		}
	}
	var out []int
	for i, ok := range have {
		if !ok {
			out = append(out, i)
		}
	}
	return out
}

// status says which chunks are missing: "...; missing: 3,5-9"
// (fleet.ParseMissing); for a model that landed, its outcome:
// "NAME@VERSION: outcome: serving pump1" (fleet.Outcome).
func (dp *deployer) status(ref string) (string, error) {
	dir, st, err := dp.transfer(ref)
	if errors.Is(err, errAlreadyLanded) {
		if o := dp.landedOutcome(ref); o != "" {
			return ref + ": outcome: " + o, nil
		}
	}
	if err != nil {
		return "", err
	}
	n := st.chunks()
	missing := missingChunks(dir, n)
	return fmt.Sprintf("%s: %d of %d chunks stored; missing: %s", ref, n-len(missing), n, fleet.FormatMissing(missing)), nil
}

// commit lands a complete transfer in data_dir/models/REF and makes the
// streams whose config names the model serve it.
func (dp *deployer) commit(ctx context.Context, ref string) (string, error) {
	d := dp.d
	dest := filepath.Join(d.landedDir(), ref)
	dir, st, err := dp.transfer(ref)
	landed := errors.Is(err, errAlreadyLanded)
	if err != nil && !landed {
		return "", err
	}
	if _, serr := os.Stat(dest); serr == nil {
		landed = true // a crash came between the landing and the cleanup
	}
	name := strings.SplitN(ref, "@", 2)[0]
	if !landed {
		if missing := missingChunks(dir, st.chunks()); len(missing) > 0 {
			return "", fmt.Errorf("not committed: missing chunks: %s", fleet.FormatMissing(missing))
		}
		if err := dp.land(dir, st, dest); err != nil {
			return "", err
		}
	}
	// Checked again where it landed: signature, then sha256.
	trust, err := d.config().Models.Trust()
	if err != nil {
		return "", fmt.Errorf("refused: %w", err)
	}
	if _, err := models.VerifyFiles(filepath.Join(dest, name), trust); err != nil {
		return "", fmt.Errorf("refused: %w", err)
	}
	if err := os.RemoveAll(dir); err != nil {
		d.log.Warn("deploy-model: removing the finished transfer", "dir", dir, "err", err)
	}
	streams, err := dp.activate(ctx, name, ref)
	if err != nil {
		dp.outcome(ref, "landed, not serving: "+err.Error())
		return "", fmt.Errorf("landed in %s but not serving: %w", dest, err)
	}
	if len(streams) == 0 {
		dp.outcome(ref, "landed; no stream's config names model "+name)
		return fmt.Sprintf("%s: landed in %s; no stream's config names model %s, so nothing serves it", ref, dest, name), nil
	}
	if shadowOn(d.config().Models.Shadow) {
		c := d.config().Models.Shadow
		return fmt.Sprintf("%s: landed in %s; shadow run on stream %s (verdict after %d windows or %v)", ref, dest, strings.Join(streams, ", "), c.Windows, c.Duration), nil
	}
	dp.outcome(ref, "serving "+strings.Join(streams, ", "))
	if p := d.publisher; p != nil {
		// The retained status names the serving models: publish it anew.
		if err := p.Rebirth(); err != nil {
			d.log.Warn("deploy-model: republishing the status", "err", err)
		}
	}
	return fmt.Sprintf("%s: landed in %s and serving stream %s", ref, dest, strings.Join(streams, ", ")), nil
}

// land assembles the model in a temporary directory beside dest, checks
// it, fsyncs it and renames it to dest.
func (dp *deployer) land(dir string, st deployState, dest string) error {
	parent := filepath.Dir(dest)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(parent, ".landing-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp) // gone after the rename
	out, err := os.Create(filepath.Join(tmp, st.Name+".tflite"))
	if err != nil {
		return err
	}
	h := sha256.New()
	w := io.MultiWriter(out, h)
	for i := range st.chunks() {
		f, err := os.Open(filepath.Join(dir, "chunks", strconv.Itoa(i)))
		if err != nil {
			out.Close()
			return err
		}
		_, err = io.Copy(w, f)
		f.Close()
		if err != nil {
			out.Close()
			return err
		}
	}
	if err := fsx.SyncClose(out); err != nil {
		return err
	}
	if sum := hex.EncodeToString(h.Sum(nil)); sum != st.SHA256 {
		// A chunk was damaged on disk after its check: start it over.
		os.RemoveAll(filepath.Join(dir, "chunks"))
		os.MkdirAll(filepath.Join(dir, "chunks"), 0o755)
		return fmt.Errorf("refused: the assembled model has sha256 %s, the manifest pins %s; every chunk must be sent again", sum, st.SHA256)
	}
	for _, ext := range []string{".json", ".sig"} {
		b, err := os.ReadFile(filepath.Join(dir, st.Name+ext))
		if errors.Is(err, fs.ErrNotExist) && ext == ".sig" {
			continue
		}
		if err != nil {
			return err
		}
		if err := writeFileAtomic(filepath.Join(tmp, st.Name+ext), b, 0o644); err != nil {
			return err
		}
	}
	if err := fsx.SyncDir(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, dest); err != nil {
		return err
	}
	return fsx.SyncDir(parent)
}

// activate records that the streams whose config names model name serve
// ref, and rebuilds; if the rebuild fails, the previous settings are put
// back.
func (dp *deployer) activate(ctx context.Context, name, ref string) ([]string, error) {
	d := dp.d
	var streams []string
	prev := map[string]streamSettings{}
	for _, sc := range d.config().Streams {
		if sc.Model != name {
			continue
		}
		streams = append(streams, sc.Name)
		prev[sc.Name] = d.settings.get(sc.Name)
		if err := d.settings.update(sc.Name, func(s *streamSettings) {
			if shadowOn(d.config().Models.Shadow) {
				s.Shadow, s.ShadowAt = ref, time.Now().UTC()
				return
			}
			if s.Model != ref {
				s.Previous = s.Model
			}
			s.Model, s.ModelAt = ref, time.Now().UTC()
		}); err != nil {
			return nil, err
		}
	}
	if len(streams) == 0 {
		return nil, nil
	}
	if shadowOn(d.config().Models.Shadow) {
		// Before the rebuild: the verdict may come before it returns.
		dp.outcome(ref, "shadow on "+strings.Join(streams, ", "))
	}
	if err := d.rebuildNow(ctx); err != nil {
		for s, p := range prev {
			if uerr := d.settings.update(s, func(x *streamSettings) { *x = p }); uerr != nil {
				d.log.Error("deploy-model: restoring the settings", "stream", s, "err", uerr)
			}
		}
		return nil, err
	}
	return streams, nil
}

// landedOutcome is the outcome of a landed model: the last one recorded,
// or what the settings say after a restart.
func (dp *deployer) landedOutcome(ref string) string {
	dp.mu.Lock()
	o := dp.outcomes[ref]
	dp.mu.Unlock()
	if o != "" {
		return o
	}
	var shadow, serving []string
	for _, sc := range dp.d.config().Streams {
		switch s := dp.d.settings.get(sc.Name); ref {
		case s.Shadow:
			shadow = append(shadow, sc.Name)
		case s.Model:
			serving = append(serving, sc.Name)
		}
	}
	switch {
	case len(shadow) > 0:
		return "shadow on " + strings.Join(shadow, ", ")
	case len(serving) > 0:
		return "serving " + strings.Join(serving, ", ")
	}
	return "landed, serving nothing"
}

// deployments is health's view of the transfers and their outcomes.
func (dp *deployer) deployments() map[string]string {
	out := map[string]string{}
	dp.mu.Lock()
	for k, v := range dp.outcomes {
		out[k] = v
	}
	dp.mu.Unlock()
	ents, _ := os.ReadDir(dp.d.deployDir())
	for _, e := range ents {
		dir := filepath.Join(dp.d.deployDir(), e.Name())
		st, err := readDeployState(dir)
		if err != nil {
			continue
		}
		if _, ok := out[e.Name()]; !ok {
			n := st.chunks()
			out[e.Name()] = fmt.Sprintf("receiving: %d of %d chunks", n-len(missingChunks(dir, n)), n)
		}
	}
	return out
}

// cleanLandings removes what a landing interrupted by a crash left.
func cleanLandings(dir string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".landing-") {
			os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
}
