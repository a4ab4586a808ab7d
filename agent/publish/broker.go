package publish

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// EmbeddedBroker is an MQTT broker inside the agent (mochi-mqtt), so that a
// device or the demo can host the local sensor bus without installing one.
// It accepts every client and every topic: meant for loopback, it logs a
// warning when it listens on anything else.
type EmbeddedBroker struct {
	srv *mochi.Server
	ln  net.Listener
	log *slog.Logger
}

// NewEmbeddedBroker listens on listen (host:port; port 0 picks a free one)
// and prepares the broker; [EmbeddedBroker.Run] serves it. logger may be
// nil.
func NewEmbeddedBroker(listen string, logger *slog.Logger) (*EmbeddedBroker, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	logger = logger.With("component", "broker")
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("embedded broker: listen %s: %w", listen, err)
	}
	if tcp, ok := ln.Addr().(*net.TCPAddr); !ok || !tcp.IP.IsLoopback() {
		logger.Warn("embedded broker listens beyond loopback and accepts any client without authentication", "addr", ln.Addr().String())
	}
	srv := mochi.New(&mochi.Options{Logger: slog.New(quietClose{logger.Handler()})})
	if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	if err := srv.AddListener(listeners.NewNet("vigil", ln)); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	return &EmbeddedBroker{srv: srv, ln: ln, log: logger}, nil
}

// Addr returns the address the broker listens on (host:port).
func (b *EmbeddedBroker) Addr() string { return b.ln.Addr().String() }

// URL returns the broker's URL for clients, tcp://host:port.
func (b *EmbeddedBroker) URL() string { return "tcp://" + b.Addr() }

// Run serves clients until ctx ends, then disconnects them and closes the
// listener. Cancellation is a clean exit and returns nil.
func (b *EmbeddedBroker) Run(ctx context.Context) error {
	if err := b.srv.Serve(); err != nil {
		_ = b.ln.Close()
		return fmt.Errorf("embedded broker: serve: %w", err)
	}
	b.log.Info("embedded broker serving", "addr", b.Addr())
	<-ctx.Done()
	if err := b.srv.Close(); err != nil {
		return fmt.Errorf("embedded broker: close: %w", err)
	}
	return nil
}

// quietClose drops the warning mochi logs for every connection it closes
// while shutting down ("use of closed network connection"): at a clean
// stop it is noise, not news.
type quietClose struct{ slog.Handler }

func (q quietClose) Handle(ctx context.Context, r slog.Record) error {
	closed := false
	r.Attrs(func(a slog.Attr) bool {
		if err, ok := a.Value.Any().(error); ok && errors.Is(err, net.ErrClosed) {
			closed = true
			return false
		}
		return true
	})
	if closed {
		return nil
	}
	return q.Handler.Handle(ctx, r)
}

func (q quietClose) WithAttrs(as []slog.Attr) slog.Handler {
	return quietClose{q.Handler.WithAttrs(as)}
}
func (q quietClose) WithGroup(name string) slog.Handler { return quietClose{q.Handler.WithGroup(name)} }
