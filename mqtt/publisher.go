package mqtt

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// Publisher keeps one MQTT connection for the device and delivers
// everything the daemon publishes. Alerts and label changes go through the
// durable Outbox and are delivered in order, at least once; frequent
// messages (per-sample state, stats) are sent directly and only while
// connected.
type Publisher struct {
	cfg    Config
	topics Topics
	log    *slog.Logger
	outbox *Outbox
	client paho.Client

	connected  atomic.Bool
	connCh     chan struct{} // signalled on every (re)connect
	reconnects atomic.Uint64

	mu        sync.Mutex
	cameras   []string
	swVersion string
	commands  CommandHandler
	latest    map[string][]byte // retained state to refresh after reconnect

	delivered atomic.Uint64
}

// Options are the parts of a Publisher that are not configuration.
type Options struct {
	Outbox    *Outbox
	Logger    *slog.Logger
	Cameras   []string // for discovery
	SWVersion string
	Commands  CommandHandler // nil disables commands
}

// NewPublisher checks the configuration and prepares the client; Run
// connects.
func NewPublisher(cfg Config, opt Options) (*Publisher, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("mqtt config: %w", err)
	}
	if opt.Outbox == nil {
		return nil, errors.New("mqtt: an outbox is required")
	}
	if opt.Logger == nil {
		opt.Logger = slog.Default()
	}
	p := &Publisher{cfg: cfg, topics: NewTopics(cfg.Prefix, cfg.Device), log: opt.Logger.With("component", "mqtt"),
		outbox: opt.Outbox, connCh: make(chan struct{}, 1), cameras: opt.Cameras, swVersion: opt.SWVersion,
		commands: opt.Commands, latest: map[string][]byte{}}
	pw, err := cfg.password()
	if err != nil {
		return nil, err
	}
	tc, err := cfg.tlsConfig()
	if err != nil {
		return nil, err
	}
	o := paho.NewClientOptions().
		AddBroker(cfg.Broker).
		SetClientID(cfg.ClientID).
		SetUsername(cfg.Username).
		SetPassword(pw).
		SetCleanSession(false). // the broker keeps our subscriptions and QoS 1 state
		SetStore(newOutboxStore()).
		SetKeepAlive(cfg.KeepAlive).
		SetAutoReconnect(true).
		SetConnectRetry(true). // also when the broker is down at start
		SetConnectRetryInterval(time.Second).
		SetMaxReconnectInterval(cfg.MaxReconnectInterval).
		SetOrderMatters(false).
		SetWriteTimeout(10*time.Second).
		SetWill(p.topics.Availability(), Offline, 1, true).
		SetOnConnectHandler(p.onConnect).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			p.connected.Store(false)
			p.log.Warn("broker connection lost; reconnecting", "broker", cfg.Broker, "err", err)
		}).
		SetReconnectingHandler(func(paho.Client, *paho.ClientOptions) { p.reconnects.Add(1) })
	if tc != nil {
		o.SetTLSConfig(tc)
	}
	if cfg.MaxReconnectInterval <= 0 {
		o.SetMaxReconnectInterval(time.Minute)
	}
	p.client = paho.NewClient(o)
	return p, nil
}

// Topics returns the device's topic scheme.
func (p *Publisher) Topics() Topics { return p.topics }

// Connected reports whether the broker connection is up.
func (p *Publisher) Connected() bool { return p.connected.Load() }

// Reconnects counts reconnect attempts since start.
func (p *Publisher) Reconnects() uint64 { return p.reconnects.Load() }

// Delivered counts outbox messages acknowledged by the broker.
func (p *Publisher) Delivered() uint64 { return p.delivered.Load() }

// Outbox returns the durable queue.
func (p *Publisher) Outbox() *Outbox { return p.outbox }

func (p *Publisher) onConnect(c paho.Client) {
	p.log.Info("connected to broker", "broker", p.cfg.Broker)
	c.Publish(p.topics.Availability(), 1, true, Online)
	if p.cfg.Commands && p.commands != nil {
		c.Subscribe(p.topics.CommandFilter(), 1, p.onCommand)
	}
	if p.cfg.Discovery.Enabled {
		c.Subscribe(p.cfg.Discovery.Prefix+"/status", 1, func(_ paho.Client, m paho.Message) {
			if string(m.Payload()) == "online" {
				p.log.Info("Home Assistant came online; republishing discovery")
				p.publishDiscovery()
			}
		})
		p.publishDiscovery()
	}
	p.connected.Store(true)
	select {
	case p.connCh <- struct{}{}:
	default:
	}
}

// Run connects and delivers the outbox until ctx ends, then publishes
// "offline", gives in-flight deliveries up to drain to finish, and
// disconnects. It returns nil after a clean shutdown.
func (p *Publisher) Run(ctx context.Context, drain time.Duration) error {
	p.client.Connect() // retries in the background until it succeeds
	p.deliverLoop(ctx)
	// Shutdown: flush what can still be flushed.
	deadline := time.Now().Add(drain)
	for p.connected.Load() && p.outbox.Len() > 0 && time.Now().Before(deadline) {
		if !p.deliverOne(time.Until(deadline)) {
			break
		}
	}
	if p.connected.Load() {
		t := p.client.Publish(p.topics.Availability(), 1, true, Offline)
		t.WaitTimeout(2 * time.Second)
	}
	p.client.Disconnect(250)
	p.connected.Store(false)
	if n := p.outbox.Len(); n > 0 {
		p.log.Info("undelivered messages kept on disk for next start", "count", n)
	}
	return nil
}

func (p *Publisher) deliverLoop(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		for p.connected.Load() && p.outbox.Len() > 0 && ctx.Err() == nil {
			if !p.deliverOne(10 * time.Second) {
				break
			}
		}
		if p.connected.Load() && p.outbox.Len() == 0 {
			p.flushLatest()
		}
		select {
		case <-ctx.Done():
			return
		case <-p.outbox.Notify():
		case <-p.connCh:
		case <-tick.C:
		}
	}
}

// deliverOne publishes the oldest outbox message and waits for the
// broker's acknowledgement; only then is it removed from disk.
func (p *Publisher) deliverOne(timeout time.Duration) bool {
	seq, msg, ok := p.outbox.Peek()
	if !ok {
		return false
	}
	t := p.client.Publish(msg.Topic, msg.QoS, msg.Retain, msg.Payload)
	if !t.WaitTimeout(timeout) {
		p.log.Warn("publish not acknowledged in time; will retry", "topic", msg.Topic, "timeout", timeout)
		return false
	}
	if err := t.Error(); err != nil {
		p.log.Warn("publish failed; will retry", "topic", msg.Topic, "err", err)
		return false
	}
	p.outbox.Ack(seq)
	p.delivered.Add(1)
	return true
}

func (p *Publisher) flushLatest() {
	p.mu.Lock()
	pending := p.latest
	p.latest = map[string][]byte{}
	p.mu.Unlock()
	for topic, payload := range pending {
		p.client.Publish(topic, 0, true, payload)
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("mqtt: payload does not marshal: %v", err)) // our own types always do
	}
	return b
}

// Alert queues an alert durably; it returns once the alert is on disk.
func (p *Publisher) Alert(a Alert) error {
	return p.outbox.Enqueue(Message{Topic: p.topics.Alert(a.Camera), Payload: mustJSON(a), QoS: 1, Kind: KindAlert})
}

// State publishes a camera's classification, retained. A label change
// (changed=true) is durable; other updates are sent only when the link is
// up and otherwise folded into the latest value.
func (p *Publisher) State(c Classification, changed bool) error {
	topic := p.topics.State(c.Camera)
	payload := mustJSON(c)
	if changed {
		return p.outbox.Enqueue(Message{Topic: topic, Payload: payload, QoS: 1, Retain: true, Kind: KindState, Key: topic})
	}
	if p.connected.Load() && p.outbox.Len() == 0 {
		p.client.Publish(topic, 0, true, payload)
		return nil
	}
	p.mu.Lock()
	p.latest[topic] = payload
	p.mu.Unlock()
	return nil
}

// Thumbnail publishes an alert's JPEG if thumbnails are on and it fits.
func (p *Publisher) Thumbnail(camera string, jpeg []byte) error {
	if p.cfg.ThumbnailMaxBytes <= 0 {
		return nil
	}
	if len(jpeg) > p.cfg.ThumbnailMaxBytes {
		return fmt.Errorf("thumbnail of %d bytes exceeds thumbnail_max_bytes %d", len(jpeg), p.cfg.ThumbnailMaxBytes)
	}
	if p.connected.Load() {
		p.client.Publish(p.topics.Thumbnail(camera), 0, true, jpeg)
	}
	return nil
}

// Stats publishes the periodic health message when connected.
func (p *Publisher) Stats(s Stats) {
	s.OutboxDepth = p.outbox.Len()
	a, st := p.outbox.Dropped()
	s.OutboxDropped = a + st
	if p.connected.Load() {
		p.client.Publish(p.topics.Stats(), 0, false, mustJSON(s))
	}
}
