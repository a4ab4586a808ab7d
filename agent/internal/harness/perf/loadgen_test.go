package perf

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/vigil-edge/vigil/agent/source"
)

// peerFields are the peer workload's payload fields, in the simulated
// pump's channel order (source.PumpChannels).
var peerFields = []string{"a1", "a2", "cur", "pres", "temp", "thermo", "volt", "flow"}

// loadGen publishes the peer workload's JSON pump samples,
// {"ts","a1","a2","cur","pres","temp","thermo","volt","flow"} with ts in
// microseconds since the epoch, at a fixed rate, as QoS 0 PUBLISH packets
// written straight to a TCP connection: an MQTT client library would cost
// more CPU per message than the code under test.
type loadGen struct {
	conn  net.Conn
	topic string
	rows  [][]float64
	sent  atomic.Int64
	last  int64 // last ts, µs
	buf   []byte
}

// dialGen connects to the broker at addr (host:port) with a clean session
// and no keep-alive.
func dialGen(addr, clientID, topic string, rows []source.Input) (*loadGen, error) {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, fmt.Errorf("load generator: %w", err)
	}
	var p []byte
	p = append(p, 0, 4, 'M', 'Q', 'T', 'T', 4, 0x02, 0, 0) // v3.1.1, clean session, keep-alive off
	p = append(p, byte(len(clientID)>>8), byte(len(clientID)))
	p = append(p, clientID...)
	pkt := appendRemLen([]byte{0x10}, len(p))
	if _, err := c.Write(append(pkt, p...)); err != nil {
		c.Close()
		return nil, fmt.Errorf("load generator: connect: %w", err)
	}
	ack := make([]byte, 4)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, ack); err != nil || ack[0] != 0x20 || ack[3] != 0 {
		c.Close()
		return nil, fmt.Errorf("load generator: connack %x: %v", ack, err)
	}
	g := &loadGen{conn: c, topic: topic}
	for _, in := range rows {
		g.rows = append(g.rows, in.Values)
	}
	return g, nil
}

func appendRemLen(b []byte, n int) []byte {
	for {
		d := byte(n % 128)
		n /= 128
		if n > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if n == 0 {
			return b
		}
	}
}

// appendMsg appends one PUBLISH packet with the next sample.
func (g *loadGen) appendMsg(b []byte, now time.Time) []byte {
	i := g.sent.Load()
	ts := max(now.UnixMicro(), g.last+1) // strictly increasing: equal times are duplicates
	g.last = ts
	var p [256]byte
	pl := append(p[:0], `{"ts":`...)
	pl = strconv.AppendInt(pl, ts, 10)
	for j, v := range g.rows[int(i)%len(g.rows)] {
		pl = append(pl, `,"`...)
		pl = append(pl, peerFields[j]...)
		pl = append(pl, `":`...)
		pl = strconv.AppendFloat(pl, v, 'g', 6, 64)
	}
	pl = append(pl, '}')
	b = append(b, 0x30)
	b = appendRemLen(b, 2+len(g.topic)+len(pl))
	b = append(b, byte(len(g.topic)>>8), byte(len(g.topic)))
	b = append(b, g.topic...)
	b = append(b, pl...)
	g.sent.Add(1)
	return b
}

// run publishes at rate messages per second for d (or until ctx ends),
// in a batch every millisecond, catching up when the timer is late. It
// returns the number sent.
func (g *loadGen) run(ctx context.Context, rate float64, d time.Duration) (int64, error) {
	start := time.Now()
	tk := time.NewTicker(time.Millisecond)
	defer tk.Stop()
	base := g.sent.Load()
	for {
		now := time.Now()
		el := now.Sub(start)
		if el >= d {
			el = d
		}
		due := int64(rate*el.Seconds()) - (g.sent.Load() - base)
		g.buf = g.buf[:0]
		for range due {
			g.buf = g.appendMsg(g.buf, now)
		}
		if len(g.buf) > 0 {
			g.conn.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := g.conn.Write(g.buf); err != nil {
				return g.sent.Load() - base, fmt.Errorf("load generator: publish: %w", err)
			}
		}
		if el >= d {
			return g.sent.Load() - base, nil
		}
		select {
		case <-ctx.Done():
			return g.sent.Load() - base, nil
		case <-tk.C:
		}
	}
}

func (g *loadGen) close() {
	g.conn.Write([]byte{0xE0, 0}) // DISCONNECT
	g.conn.Close()
}

// scoreSub subscribes to Vigil's scores on the output broker with a
// persistent session at QoS 1 (so nothing published while it reconnects
// after an outage is missed) and records, per score, its arrival and its
// window end.
type scoreSub struct {
	c paho.Client

	mu       sync.Mutex
	ids      map[string]struct{}
	dups     int
	live     []time.Duration // arrival − window end, of scores not replayed
	liveAt   []time.Time     // their arrivals
	replayed int
	lastRepl time.Time // arrival of the last replayed score
	lastAny  time.Time
}

type scoreMsg struct {
	ID       string    `json:"id"`
	TS       time.Time `json:"ts"`
	Replayed bool      `json:"replayed"`
}

func subscribeScores(url, clientID, filter string) (*scoreSub, error) {
	s := &scoreSub{ids: map[string]struct{}{}}
	o := paho.NewClientOptions().AddBroker(url).SetClientID(clientID).SetCleanSession(false).
		SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(200 * time.Millisecond).
		SetMaxReconnectInterval(500 * time.Millisecond).SetKeepAlive(5 * time.Second).
		SetOrderMatters(false)
	o.SetOnConnectHandler(func(c paho.Client) {
		c.Subscribe(filter, 1, s.onMessage)
	})
	o.SetDefaultPublishHandler(s.onMessage)
	s.c = paho.NewClient(o)
	tok := s.c.Connect()
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("score subscriber: connect: %v", tok.Error())
	}
	tok = s.c.Subscribe(filter, 1, s.onMessage)
	if !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		return nil, fmt.Errorf("score subscriber: subscribe: %v", tok.Error())
	}
	return s, nil
}

func (s *scoreSub) onMessage(_ paho.Client, m paho.Message) {
	now := time.Now()
	var sc scoreMsg
	if err := json.Unmarshal(m.Payload(), &sc); err != nil || sc.ID == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastAny = now
	if _, dup := s.ids[sc.ID]; dup {
		s.dups++
		return
	}
	s.ids[sc.ID] = struct{}{}
	if sc.Replayed {
		s.replayed++
		s.lastRepl = now
		return
	}
	s.live = append(s.live, now.Sub(sc.TS))
	s.liveAt = append(s.liveAt, now)
}

// count is the number of distinct scores received.
func (s *scoreSub) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.ids)
}

func (s *scoreSub) close() { s.c.Disconnect(100) }
