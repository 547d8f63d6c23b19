package mqtt

import (
	"errors"
	"fmt"
	"log/slog"
	"net"

	mochi "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/hooks/auth"
	"github.com/mochi-mqtt/server/v2/listeners"
)

// BrokerConfig configures the embedded broker (`broker: embedded`).
type BrokerConfig struct {
	// Address to listen on; loopback by default so a device does not
	// expose an open broker by accident.
	Address string `yaml:"address"`
	// Users, when set, are the only credentials accepted.
	Users map[string]string `yaml:"users"`
	// Anonymous must be set to serve without users on an address other
	// machines can reach: an open broker is otherwise refused.
	Anonymous bool `yaml:"anonymous"`
}

// Validate checks the address and refuses an anonymous broker reachable
// from the network unless that was asked for explicitly.
func (c BrokerConfig) Validate() error {
	host, _, err := net.SplitHostPort(c.Address)
	if err != nil {
		return fmt.Errorf("address %q: use host:port (127.0.0.1:1883)", c.Address)
	}
	ip := net.ParseIP(host)
	loopback := host == "localhost" || (ip != nil && ip.IsLoopback())
	if !loopback && len(c.Users) == 0 && !c.Anonymous {
		return fmt.Errorf("address %q reaches beyond this machine with no users: anyone on the network could publish and read; add users, or set anonymous: true if that is intended", c.Address)
	}
	return nil
}

// Broker is an in-process MQTT broker (mochi-mqtt).
type Broker struct {
	srv  *mochi.Server
	addr string
}

// StartBroker starts an embedded broker and returns once it listens.
func StartBroker(cfg BrokerConfig, log *slog.Logger) (*Broker, error) {
	if cfg.Address == "" {
		cfg.Address = "127.0.0.1:1883"
	}
	if log == nil {
		log = slog.Default()
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	if len(cfg.Users) == 0 && cfg.Anonymous {
		log.Warn("embedded MQTT broker is anonymous and reachable from the network (embedded_broker.anonymous: true)", "address", cfg.Address)
	}
	// Listen ourselves first so a busy port is a clear error now, not a
	// log line from a goroutine later.
	ln, err := net.Listen("tcp", cfg.Address)
	if err != nil {
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	srv := mochi.New(&mochi.Options{InlineClient: true, Logger: log.With("component", "broker")})
	if len(cfg.Users) > 0 {
		var rules auth.AuthRules
		for u, pw := range cfg.Users {
			rules = append(rules, auth.AuthRule{Username: auth.RString(u), Password: auth.RString(pw), Allow: true})
		}
		if err := srv.AddHook(new(auth.Hook), &auth.Options{Ledger: &auth.Ledger{Auth: rules}}); err != nil {
			return nil, fmt.Errorf("embedded broker auth: %w", err)
		}
	} else if err := srv.AddHook(new(auth.AllowHook), nil); err != nil {
		return nil, err
	}
	if err := srv.AddListener(listeners.NewTCP(listeners.Config{ID: "tcp", Address: addr})); err != nil {
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	if err := srv.Serve(); err != nil {
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	log.Info("embedded MQTT broker listening", "address", addr, "auth", len(cfg.Users) > 0)
	return &Broker{srv: srv, addr: addr}, nil
}

// Addr is the listening address (host:port).
func (b *Broker) Addr() string { return b.addr }

// URL is the tcp:// URL clients connect to.
func (b *Broker) URL() string { return "tcp://" + b.addr }

// Close stops the broker.
func (b *Broker) Close() error {
	if b == nil || b.srv == nil {
		return errors.New("broker not started")
	}
	return b.srv.Close()
}
