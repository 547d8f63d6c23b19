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
// connected. When the outbox cannot be written (a full disk), durable
// messages wait in memory, in order, and are delivered directly.
type Publisher struct {
	cfg    Config
	topics Topics
	log    *slog.Logger
	outbox *Outbox
	client paho.Client

	connected  atomic.Bool
	connCh     chan struct{} // signalled on every (re)connect
	lostCh     chan struct{} // signalled when the connection drops
	reconnects atomic.Uint64
	everUp     atomic.Bool
	// down is closed when the current connection drops, so a wait for an
	// acknowledgement that will never come (paho forgets in-flight
	// publishes on a lost connection) ends at once.
	downMu sync.Mutex
	down   chan struct{}

	mu        sync.Mutex
	cameras   []string
	swVersion string
	latest    map[string][]byte    // retained state to refresh after reconnect
	pending   []Message            // durable messages the outbox could not store
	outboxErr string               // the last outbox write error, until a write works
	cleared   map[string]time.Time // retained command topics we emptied

	commands CommandHandler
	subs     []Subscription
	cmdSlots chan struct{} // bounds the commands running at once

	delivered     atomic.Uint64
	writeFailures atomic.Uint64
}

// Options are the parts of a Publisher that are not configuration.
type Options struct {
	Outbox    *Outbox
	Logger    *slog.Logger
	Cameras   []string // for discovery
	SWVersion string
	Commands  CommandHandler // nil disables commands
	// Subscriptions are topic filters subscribed (QoS 1) at every
	// connection, with their handlers (run on paho's goroutine: hand
	// slow work off).
	Subscriptions []Subscription
}

// Subscription is a topic filter and what to do with its messages.
type Subscription struct {
	Filter  string
	Handler func(topic string, payload []byte, retained bool)
}

// maxPending bounds durable messages held in memory while the outbox
// cannot be written; beyond it the oldest states, then alerts, are dropped
// (and counted), as the outbox does at its cap.
const maxPending = 10000

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
		outbox: opt.Outbox, connCh: make(chan struct{}, 1), lostCh: make(chan struct{}, 1), cameras: opt.Cameras, swVersion: opt.SWVersion,
		commands: opt.Commands, subs: opt.Subscriptions, latest: map[string][]byte{}, cmdSlots: make(chan struct{}, maxRunningCommands), down: make(chan struct{})}
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
		// Reconnecting is ours (connection.go): paho's backoff keeps growing
		// across outages and resets only after long quiet periods.
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetConnectTimeout(10*time.Second).
		SetOrderMatters(false).
		SetWriteTimeout(10*time.Second).
		SetWill(p.topics.Availability(), Offline, 1, true).
		SetOnConnectHandler(p.onConnect).
		SetConnectionLostHandler(func(_ paho.Client, err error) {
			p.connected.Store(false)
			p.downMu.Lock()
			select {
			case <-p.down:
			default:
				close(p.down)
			}
			p.downMu.Unlock()
			p.log.Warn("broker connection lost; reconnecting", "broker", cfg.Broker, "err", err)
			select {
			case p.lostCh <- struct{}{}:
			default:
			}
		})
	if tc != nil {
		o.SetTLSConfig(tc)
	}
	p.client = paho.NewClient(o)
	return p, nil
}

// Topics returns the device's topic scheme.
func (p *Publisher) Topics() Topics { return p.topics }

// Connected reports whether the broker connection is up.
func (p *Publisher) Connected() bool { return p.connected.Load() }

// Reconnects counts connections re-established after a loss.
func (p *Publisher) Reconnects() uint64 { return p.reconnects.Load() }

// Delivered counts durable messages acknowledged by the broker.
func (p *Publisher) Delivered() uint64 { return p.delivered.Load() }

// Outbox returns the durable queue.
func (p *Publisher) Outbox() *Outbox { return p.outbox }

// OutboxError is the last error writing the outbox while it persists
// (messages then wait in memory), or "".
func (p *Publisher) OutboxError() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.outboxErr
}

// Pending counts durable messages held in memory because the outbox could
// not store them.
func (p *Publisher) Pending() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.pending)
}

// OutboxWriteFailures counts failed outbox writes since start.
func (p *Publisher) OutboxWriteFailures() uint64 { return p.writeFailures.Load() }

func (p *Publisher) onConnect(c paho.Client) {
	p.log.Info("connected to broker", "broker", p.cfg.Broker)
	p.downMu.Lock()
	p.down = make(chan struct{})
	p.downMu.Unlock()
	if p.everUp.Swap(true) {
		p.reconnects.Add(1)
	}
	c.Publish(p.topics.Availability(), 1, true, Online)
	if p.cfg.Commands && p.commands != nil {
		c.Subscribe(p.topics.CommandFilter(), 1, p.onCommand)
	}
	for _, sub := range p.subs {
		c.Subscribe(sub.Filter, 1, func(_ paho.Client, m paho.Message) { sub.Handler(m.Topic(), m.Payload(), m.Retained()) })
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

// Run connects and delivers until ctx ends, then publishes "offline",
// gives in-flight deliveries up to drain to finish, and disconnects. It
// returns nil after a clean shutdown.
func (p *Publisher) Run(ctx context.Context, drain time.Duration) error {
	connDone := make(chan struct{})
	go func() { p.keepConnected(ctx); close(connDone) }()
	p.deliverLoop(ctx)
	// Shutdown: flush what can still be flushed.
	deadline := time.Now().Add(drain)
	for p.connected.Load() && (p.outbox.Len() > 0 || p.Pending() > 0) && time.Now().Before(deadline) {
		if !p.deliverOne(time.Until(deadline)) && !p.flushPending(time.Until(deadline)) {
			break
		}
	}
	<-connDone
	if p.connected.Load() {
		t := p.client.Publish(p.topics.Availability(), 1, true, Offline)
		t.WaitTimeout(2 * time.Second)
	}
	p.client.Disconnect(250)
	p.connected.Store(false)
	if n := p.outbox.Len(); n > 0 {
		p.log.Info("undelivered messages kept on disk for next start", "count", n)
	}
	if n := p.Pending(); n > 0 {
		p.log.Error("durable messages lost at shutdown: the outbox could not store them", "count", n, "err", p.OutboxError())
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
		if p.outbox.Len() == 0 {
			p.flushPending(10 * time.Second)
		}
		if p.connected.Load() && p.outbox.Len() == 0 && p.Pending() == 0 {
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
	if !p.publishAcked(msg, timeout) {
		return false
	}
	p.outbox.Ack(seq)
	p.delivered.Add(1)
	return true
}

func (p *Publisher) publishAcked(msg Message, timeout time.Duration) bool {
	p.downMu.Lock()
	down := p.down
	p.downMu.Unlock()
	t := p.client.Publish(msg.Topic, msg.QoS, msg.Retain, msg.Payload)
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-t.Done():
	case <-down:
		return false // resent after the reconnect
	case <-timer.C:
		p.log.Warn("publish not acknowledged in time; will retry", "topic", msg.Topic, "timeout", timeout)
		return false
	}
	if err := t.Error(); err != nil {
		p.log.Warn("publish failed; will retry", "topic", msg.Topic, "err", err)
		return false
	}
	return true
}

// flushPending moves messages held in memory back into the outbox once it
// can be written again, or, while it cannot, publishes them directly when
// connected. Order is kept: the outbox's older messages go first.
func (p *Publisher) flushPending(timeout time.Duration) bool {
	progress := false
	for {
		p.mu.Lock()
		if len(p.pending) == 0 {
			p.mu.Unlock()
			return progress
		}
		msg := p.pending[0]
		p.mu.Unlock()
		if err := p.outbox.Enqueue(msg); err == nil {
			p.mu.Lock()
			p.pending = p.pending[1:]
			p.outboxErr = ""
			p.mu.Unlock()
			progress = true
			continue
		}
		if !p.connected.Load() || !p.publishAcked(msg, timeout) {
			return progress
		}
		p.mu.Lock()
		p.pending = p.pending[1:]
		p.mu.Unlock()
		p.delivered.Add(1)
		progress = true
	}
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

// durable queues a message that must not be lost: on disk when it can be
// written, else in memory (in order) to be delivered directly. It returns
// an error only when the message had to be dropped.
func (p *Publisher) durable(msg Message) error {
	p.mu.Lock()
	behind := len(p.pending) > 0
	p.mu.Unlock()
	if !behind {
		err := p.outbox.Enqueue(msg)
		if err == nil {
			p.mu.Lock()
			p.outboxErr = ""
			p.mu.Unlock()
			return nil
		}
		p.writeFailures.Add(1)
		p.log.Error("outbox write failed: the message waits in memory and goes out directly while the broker is up", "topic", msg.Topic, "err", err)
		p.mu.Lock()
		p.outboxErr = err.Error()
		p.mu.Unlock()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if msg.Kind == KindState && msg.Key != "" {
		for i, m := range p.pending {
			if m.Kind == KindState && m.Key == msg.Key {
				p.pending = append(p.pending[:i], p.pending[i+1:]...)
				break
			}
		}
	}
	p.pending = append(p.pending, msg)
	var dropped error
	for len(p.pending) > maxPending {
		i := 0
		for i < len(p.pending)-1 && p.pending[i].Kind != KindState {
			i++
		}
		dropped = fmt.Errorf("memory queue full (%d messages): dropped a %s for %s", maxPending, p.pending[i].Kind, p.pending[i].Topic)
		p.outbox.countDrop(p.pending[i].Kind)
		p.pending = append(p.pending[:i], p.pending[i+1:]...)
	}
	p.outbox.signal()
	return dropped
}

// Alert queues an alert durably (see durable).
func (p *Publisher) Alert(a Alert) error {
	return p.durable(Message{Topic: p.topics.Alert(a.Camera), Payload: mustJSON(a), QoS: 1, Kind: KindAlert})
}

// State publishes a camera's classification, retained. A label change
// (changed=true) is durable; other updates are sent only when the link is
// up and otherwise folded into the latest value, which a durable change
// replaces (an older folded state must never follow a newer change).
func (p *Publisher) State(c Classification, changed bool) error {
	return p.retained(p.topics.State(c.Camera), mustJSON(c), changed)
}

// retained publishes a retained state: durably (through the outbox, in
// order with alerts) when durable, else directly while connected and
// nothing durable waits, otherwise folded into the latest value that a
// reconnect sends and a durable one replaces.
func (p *Publisher) retained(topic string, payload []byte, durable bool) error {
	if durable {
		p.mu.Lock()
		delete(p.latest, topic)
		p.mu.Unlock()
		return p.durable(Message{Topic: topic, Payload: payload, QoS: 1, Retain: true, Kind: KindState, Key: topic})
	}
	if p.connected.Load() && p.outbox.Len() == 0 && p.Pending() == 0 {
		p.client.Publish(topic, 0, true, payload)
		return nil
	}
	p.mu.Lock()
	p.latest[topic] = payload
	p.mu.Unlock()
	return nil
}

// ErrNotConnected is returned by publications that are sent only while
// the broker connection is up.
var ErrNotConnected = errors.New("not connected to the broker")

// Thumbnail publishes an alert's JPEG (retained) if thumbnails are on. A
// JPEG over thumbnail_max_bytes is an error: the caller shrinks it first.
func (p *Publisher) Thumbnail(camera string, jpeg []byte) error {
	if p.cfg.ThumbnailMaxBytes <= 0 {
		return nil
	}
	if len(jpeg) > p.cfg.ThumbnailMaxBytes {
		return fmt.Errorf("thumbnail of %d bytes exceeds thumbnail_max_bytes %d", len(jpeg), p.cfg.ThumbnailMaxBytes)
	}
	if !p.connected.Load() {
		return ErrNotConnected
	}
	t := p.client.Publish(p.topics.Thumbnail(camera), 0, true, jpeg)
	if t.WaitTimeout(10*time.Second) && t.Error() != nil {
		return t.Error()
	}
	return nil
}

// ThumbnailLimit is thumbnail_max_bytes (0: thumbnails off).
func (p *Publisher) ThumbnailLimit() int { return p.cfg.ThumbnailMaxBytes }

// ModelInfo publishes, retained and durably, what model serves: on start
// and after every reload, so subscribers learn of a new label set.
func (p *Publisher) ModelInfo(m ModelInfo) error {
	topic := p.topics.Model()
	return p.durable(Message{Topic: topic, Payload: mustJSON(m), QoS: 1, Retain: true, Kind: KindState, Key: topic})
}

// Update publishes the model update state, retained. A transition
// (durable=true) goes through the outbox and survives a restart or an
// outage; progress while downloading is sent only while connected, and
// otherwise folded into the latest value a reconnect sends.
func (p *Publisher) Update(payload []byte, durable bool) error {
	return p.retained(p.topics.Update(), payload, durable)
}

// Samples publishes the samples waiting for a label, retained, while
// connected (the next change after a reconnect brings it up to date).
func (p *Publisher) Samples(s SamplesState) error {
	if !p.connected.Load() {
		return ErrNotConnected
	}
	t := p.client.Publish(p.topics.Samples(), 1, true, mustJSON(s))
	if t.WaitTimeout(10*time.Second) && t.Error() != nil {
		return t.Error()
	}
	return nil
}

// RepublishDiscovery sends the Home Assistant discovery configs again.
func (p *Publisher) RepublishDiscovery() {
	if p.cfg.Discovery.Enabled && p.connected.Load() {
		p.publishDiscovery()
	}
}

// Stats publishes the periodic health message when connected.
func (p *Publisher) Stats(s Stats) {
	s.OutboxDepth = p.outbox.Len() + p.Pending()
	a, st := p.outbox.Dropped()
	s.OutboxDropped = a + st
	if p.connected.Load() {
		p.client.Publish(p.topics.Stats(), 0, false, mustJSON(s))
	}
}
