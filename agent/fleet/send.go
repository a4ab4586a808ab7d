package fleet

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/vigil-edge/vigil/agent/internal/mqttconn"
	"github.com/vigil-edge/vigil/agent/internal/throttle"
)

// Reply is a device's answer on <command topic>/reply.
type Reply struct {
	ID      string `json:"id"`
	OK      bool   `json:"ok"`
	Message string `json:"message"`
}

// Sender sends a model to one device with deploy-model, resuming a
// transfer the device already holds part of.
type Sender struct {
	// Client is connected to the device's broker.
	Client paho.Client
	// Topic is the device's <prefix>/<device>/cmd/deploy-model.
	Topic string
	// ChunkSize is the size of a chunk before base64 (default DefaultChunk).
	ChunkSize int
	// Window is how many chunks may await their reply (default 4).
	Window int
	// Timeout bounds the wait for one reply (default 30 s); a chunk whose
	// reply does not come is sent again after a status.
	Timeout time.Duration
	// Progress, if set, is told each chunk the device stored.
	Progress func(stored, total int)
	// Mangle, if set, may alter a chunk's data after its sha256 was taken
	// (tests: a chunk corrupted in flight); attempt counts from 0.
	Mangle func(index, attempt int, data []byte) []byte
	// Limit, if > 0, stops after sending that many chunks (tests: an
	// interrupted transfer).
	Limit int
	// Key, if set, signs every message (signed commands: the device's
	// mqtt.commands.require_signature lists deploy-model by default).
	Key ed25519.PrivateKey

	mu      sync.Mutex
	waiting map[string]chan Reply
	seq     int
	prefix  string
}

// Result is what Deploy did.
type Result struct {
	Sent, Refused int    // chunk messages sent, and refused by the device
	Message       string // the commit's reply
}

// ReadModel reads DIR/NAME's manifest, signature (nil if none) and model.
func ReadModel(path string) (manifest, sig, tflite []byte, err error) {
	base := strings.TrimSuffix(strings.TrimSuffix(path, ".json"), ".tflite")
	if manifest, err = os.ReadFile(base + ".json"); err != nil {
		return nil, nil, nil, err
	}
	if tflite, err = os.ReadFile(base + ".tflite"); err != nil {
		return nil, nil, nil, err
	}
	sig, err = os.ReadFile(base + ".sig")
	if errors.Is(err, os.ErrNotExist) {
		sig, err = nil, nil
	}
	return manifest, sig, tflite, err
}

// Deploy sends the model (name and version as its manifest says) and
// commits it. It returns the device's refusal as an error.
func (s *Sender) Deploy(ctx context.Context, name, version string, manifest, sig, tflite []byte) (Result, error) {
	if s.ChunkSize == 0 {
		s.ChunkSize = DefaultChunk
	}
	if s.Window <= 0 {
		s.Window = 4
	}
	if err := s.subscribe(ctx); err != nil {
		return Result{}, err
	}
	defer s.Client.Unsubscribe(s.Topic + "/reply")
	return s.deploy(ctx, name, version, manifest, sig, tflite)
}

// subscribe starts matching replies (Deploy and Outcome do it). A
// subscription the broker refuses (SUBACK 0x80: a NATS node does while
// JetStream elects its leaders after a node died) or does not answer is
// tried again, with a backoff, until Timeout; then the error says so.
//
// QoS 0: a reply is matched by its id and one that is lost costs a status
// round (a chunk) or a "no reply" error (the other ops), as a lost command
// would; on the clean session the client uses, QoS 1 would not redeliver
// anything a TCP connection loses, and a NATS node needs JetStream (a
// consumer, which is what it refuses during an election) for a QoS 1
// subscription but not for QoS 0.
func (s *Sender) subscribe(ctx context.Context) error {
	if s.Timeout <= 0 {
		s.Timeout = 30 * time.Second
	}
	s.mu.Lock()
	if s.waiting == nil {
		var nonce [6]byte
		rand.Read(nonce[:])
		s.prefix = "d" + hex.EncodeToString(nonce[:]) + "-"
		s.waiting = map[string]chan Reply{}
	}
	s.mu.Unlock()
	topic := s.Topic + "/reply"
	deadline := time.Now().Add(s.Timeout)
	bo := throttle.Backoff{Initial: 100 * time.Millisecond, Max: 2 * time.Second}
	for attempt := 1; ; attempt++ {
		err := subscribeOnce(s.Client, topic, time.Until(deadline), s.onReply)
		if err == nil {
			return nil
		}
		d := bo.Delay(attempt)
		if time.Until(deadline) < d {
			return fmt.Errorf("%w (%d attempts in %v)", err, attempt, s.Timeout)
		}
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w: %w", err, ctx.Err())
		}
	}
}

// subscribeOnce subscribes to topic at QoS 0 and waits up to d for the
// SUBACK; paho completes a refused subscription without an error, so its
// code is checked.
func subscribeOnce(c paho.Client, topic string, d time.Duration, h paho.MessageHandler) error {
	tok := c.Subscribe(topic, 0, h)
	if !tok.WaitTimeout(max(d, time.Millisecond)) {
		return fmt.Errorf("subscribe to %s: no answer from the broker", topic)
	}
	if err := tok.Error(); err != nil {
		return fmt.Errorf("subscribe to %s: %w", topic, err)
	}
	return mqttconn.Refused(tok)
}

func (s *Sender) deploy(ctx context.Context, name, version string, manifest, sig, tflite []byte) (Result, error) {
	var res Result
	sum := sha256.Sum256(tflite)
	base := Deploy{Name: name, Version: version}
	begin := base
	begin.Op, begin.Manifest, begin.Signature = OpBegin, manifest, sig
	begin.Size, begin.SHA256, begin.ChunkSize = int64(len(tflite)), hex.EncodeToString(sum[:]), s.ChunkSize
	total := begin.Chunks()
	if _, err := s.call(ctx, begin); err != nil {
		return res, err
	}
	attempts := map[int]int{}
	for round := 0; ; round++ {
		st := base
		st.Op = OpStatus
		rep, err := s.call(ctx, st)
		if err != nil {
			return res, err
		}
		_, list, _ := strings.Cut(rep.Message, "missing: ")
		missing, err := ParseMissing(strings.TrimSpace(list), total)
		if err != nil {
			return res, err
		}
		if len(missing) == 0 {
			break
		}
		if round > 5 {
			return res, fmt.Errorf("chunks %s still missing after %d rounds", FormatMissing(missing), round)
		}
		if err := s.sendChunks(ctx, base, tflite, missing, total, attempts, &res); err != nil {
			return res, err
		}
	}
	commit := base
	commit.Op = OpCommit
	rep, err := s.call(ctx, commit)
	if err != nil {
		return res, err
	}
	res.Message = rep.Message
	return res, nil
}

// Outcome asks the device for the outcome of a landed model (the status
// op): "shadow on ...", "serving ...", "rolled-back on ...", "failed: ...".
func (s *Sender) Outcome(ctx context.Context, name, version string) (string, error) {
	if err := s.subscribe(ctx); err != nil {
		return "", err
	}
	defer s.Client.Unsubscribe(s.Topic + "/reply")
	st := Deploy{Op: OpStatus, Name: name, Version: version}
	rep, err := s.call(ctx, st)
	if err != nil {
		return "", err
	}
	_, o, ok := strings.Cut(rep.Message, ": outcome: ")
	if !ok {
		return "", fmt.Errorf("status: %s", rep.Message)
	}
	return o, nil
}

// errStopped is returned when Limit stopped the transfer.
var errStopped = errors.New("stopped after Limit chunks")

// IsStopped reports whether Deploy stopped because of Limit.
func IsStopped(err error) bool { return errors.Is(err, errStopped) }

func (s *Sender) sendChunks(ctx context.Context, base Deploy, tflite []byte, missing []int, total int, attempts map[int]int, res *Result) error {
	type pending struct {
		index int
		ch    chan Reply
		id    string
	}
	var inflight []pending
	wait := func(p pending) error {
		defer s.forget(p.id)
		select {
		case rep := <-p.ch:
			if !rep.OK {
				res.Refused++ // sent again after the next status
				return nil
			}
			if s.Progress != nil {
				var stored, n int
				if _, after, ok := strings.Cut(rep.Message, "; "); ok {
					fmt.Sscanf(after, "%d of %d", &stored, &n)
				}
				s.Progress(stored, total)
			}
			return nil
		case <-time.After(s.Timeout):
			return nil // the next status says whether it arrived
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for _, i := range missing {
		if s.Limit > 0 && res.Sent >= s.Limit {
			for _, p := range inflight {
				if err := wait(p); err != nil {
					return err
				}
			}
			return errStopped
		}
		lo := i * s.ChunkSize
		hi := min(lo+s.ChunkSize, len(tflite))
		data := tflite[lo:hi]
		sum := sha256.Sum256(data)
		c := base
		c.Op, c.Index, c.SHA256, c.Data = OpChunk, i, hex.EncodeToString(sum[:]), data
		if s.Mangle != nil {
			c.Data = s.Mangle(i, attempts[i], append([]byte(nil), data...))
		}
		attempts[i]++
		id, ch, err := s.publish(c)
		if err != nil {
			return err
		}
		res.Sent++
		inflight = append(inflight, pending{i, ch, id})
		if len(inflight) >= s.Window {
			if err := wait(inflight[0]); err != nil {
				return err
			}
			inflight = inflight[1:]
		}
	}
	for _, p := range inflight {
		if err := wait(p); err != nil {
			return err
		}
	}
	return nil
}

// call publishes m and waits for its reply; a refusal is an error.
func (s *Sender) call(ctx context.Context, m Deploy) (Reply, error) {
	id, ch, err := s.publish(m)
	if err != nil {
		return Reply{}, err
	}
	defer s.forget(id)
	select {
	case rep := <-ch:
		if !rep.OK {
			return rep, fmt.Errorf("%s: %s", m.Op, rep.Message)
		}
		return rep, nil
	case <-time.After(s.Timeout):
		return Reply{}, fmt.Errorf("%s: no reply within %v", m.Op, s.Timeout)
	case <-ctx.Done():
		return Reply{}, ctx.Err()
	}
}

func (s *Sender) publish(m Deploy) (string, chan Reply, error) {
	s.mu.Lock()
	s.seq++
	m.ID = fmt.Sprintf("%s%d", s.prefix, s.seq)
	ch := make(chan Reply, 1)
	s.waiting[m.ID] = ch
	s.mu.Unlock()
	payload := m.Encode()
	if s.Key != nil {
		// <prefix>/<device>/cmd/<name>
		parts := strings.Split(s.Topic, "/")
		if len(parts) >= 3 {
			payload = SignCommand(s.Key, parts[len(parts)-3], parts[len(parts)-1], payload, time.Now())
		}
	}
	tok := s.Client.Publish(s.Topic, 1, false, payload)
	if !tok.WaitTimeout(s.Timeout) || tok.Error() != nil {
		s.forget(m.ID)
		return "", nil, fmt.Errorf("publish %s: %v", m.Op, tok.Error())
	}
	return m.ID, ch, nil
}

func (s *Sender) forget(id string) {
	s.mu.Lock()
	delete(s.waiting, id)
	s.mu.Unlock()
}

func (s *Sender) onReply(_ paho.Client, msg paho.Message) {
	var r Reply
	if json.Unmarshal(msg.Payload(), &r) != nil {
		return
	}
	s.mu.Lock()
	ch := s.waiting[r.ID]
	s.mu.Unlock()
	if ch != nil {
		select {
		case ch <- r:
		default:
		}
	}
}
