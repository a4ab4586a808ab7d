package publish

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/vigil-edge/vigil/agent/internal/mqttconn"
	"github.com/vigil-edge/vigil/agent/internal/throttle"
)

// A clustered broker can fail what a single one never does while the
// connection stays up: a NATS node whose JetStream is electing leaders
// (after another node died) refuses a QoS 1 subscription (SUBACK 0x80) and
// drops a retained message it cannot store. The keeper goroutines below
// keep the session's command subscription and retained "online" status in
// place for as long as the connection lasts, instead of until the next
// reconnection.

// keeper runs the session's status and subscription keepers; stop ends
// them (before the "offline" status, which no "online" may follow).
type keeper struct {
	s       *session
	stop    chan struct{}
	restate chan struct{} // asks for the status again (after a subscription that had failed)
	wg      sync.WaitGroup
}

// keep starts the keepers; first is the token of the status published at
// connect.
func (s *session) keep(first mqtt.Token) *keeper {
	k := &keeper{s: s, stop: make(chan struct{}), restate: make(chan struct{}, 1)}
	k.wg.Go(func() { k.status(first) })
	if s.p.opts.CommandsEnabled {
		k.wg.Go(k.subscribe)
	}
	return k
}

// end stops the keepers and waits for them.
func (k *keeper) end() {
	close(k.stop)
	k.wg.Wait()
}

// sleep waits d; false when the keeper must end.
func (k *keeper) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-k.stop:
	case <-k.s.lost:
	}
	return false
}

func (k *keeper) ended() bool {
	select {
	case <-k.stop:
		return true
	case <-k.s.lost:
		return true
	default:
		return false
	}
}

// wait waits for tok up to the write timeout; it returns nil when tok
// completed without error, errEnded when the keeper must end.
func (k *keeper) wait(tok mqtt.Token) error {
	t := time.NewTimer(k.s.p.opts.WriteTimeout)
	defer t.Stop()
	select {
	case <-tok.Done():
		return tok.Error()
	case <-t.C:
		return fmt.Errorf("no acknowledgement within %v", k.s.p.opts.WriteTimeout)
	case <-k.stop:
	case <-k.s.lost:
	}
	return errEnded
}

var errEnded = errors.New("session ended")

func (k *keeper) backoff() throttle.Backoff {
	return throttle.Backoff{Initial: k.s.p.opts.ReconnectMin, Max: k.s.p.opts.ReconnectMax}
}

// retry calls try (with its attempt number, from 1) until it returns nil,
// waiting the backoff between attempts, and returns the attempt that
// succeeded; 0 when the keeper must end first. Each failure is counted in
// failures and logged, rate-limited per key, with msg.
func (k *keeper) retry(key, msg string, failures *atomic.Uint64, try func(attempt int) error) int {
	p := k.s.p
	for attempt := 1; ; attempt++ {
		err := try(attempt)
		if err == nil {
			return attempt
		}
		if errors.Is(err, errEnded) || k.ended() {
			return 0
		}
		n := failures.Add(1)
		p.keepLog.Log(slog.LevelWarn, key, msg, "err", err, "attempt", attempt, "failures_total", n)
		if !k.sleep(k.backoff().Delay(attempt)) {
			return 0
		}
	}
}

// status confirms the retained "online" status (QoS 1: its PUBACK),
// publishing it again with the backoff until the broker acknowledges it,
// and publishes it again every StatusInterval and whenever the subscriber
// asks (restate): a cluster may acknowledge a retained message and still
// lose it (a NATS node logs "unable to store retained message" during a
// JetStream election), and only publishing it again brings it back.
func (k *keeper) status(tok mqtt.Token) {
	p := k.s.p
	var tick <-chan time.Time
	if p.opts.StatusInterval > 0 {
		t := time.NewTicker(p.opts.StatusInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		acked := k.retry("status", "retained status not acknowledged: publishing it again", &p.statusFailures, func(attempt int) error {
			if attempt > 1 {
				tok = k.s.publishStatus()
			}
			return k.wait(tok)
		})
		if acked == 0 {
			return
		}
		select {
		case <-tick:
		case <-k.restate:
		case <-k.stop:
			return
		case <-k.s.lost:
			return
		}
		tok = k.s.publishStatus()
	}
}

// publishStatus publishes the session's retained "online" status.
func (s *session) publishStatus() mqtt.Token {
	return s.cl.Publish(s.p.status, 1, true, s.p.statusPayload("online", s.birth, s.since, ""))
}

// subscribe subscribes to the commands, again with the backoff while the
// broker refuses the subscription or does not answer, and then asks for the
// status again when it had failed. Nothing of it runs on paho's goroutines:
// the waits would block its message handling.
func (k *keeper) subscribe() {
	p := k.s.p
	attempt := k.retry("subscribe", "no command subscription: subscribing again", &p.cmdSubFailures, func(int) error { return k.subscribeOnce() })
	if attempt == 0 {
		return
	}
	p.cmdSubscribed.Store(true)
	if attempt > 1 {
		p.log.Info("subscribed to commands", "attempts", attempt)
		p.keepLog.Reset("subscribe")
		select {
		case k.restate <- struct{}{}:
		default:
		}
	}
}

// subscribeOnce subscribes to <base>/cmd/+ at QoS 1 and checks the SUBACK:
// paho completes a refused subscription (0x80) without an error.
func (k *keeper) subscribeOnce() error {
	p := k.s.p
	filter := p.cmdBase + "+"
	tok := k.s.cl.Subscribe(filter, 1, p.onCommand)
	if err := k.wait(tok); err != nil {
		if errors.Is(err, errEnded) {
			return err
		}
		return fmt.Errorf("subscribe %s: %w", filter, err)
	}
	return mqttconn.Refused(tok)
}
