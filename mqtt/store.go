package mqtt

import (
	"strings"

	paho "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// outboxStore is paho's memory store minus outgoing messages. Our durable
// Outbox already resends anything not acknowledged, so paho's own copy is
// redundant — and resending it on reconnect races with paho's writer
// (paho issue #703: resume sets the DUP flag while the packet is being
// written). Incoming state and the broker's persistent session are kept.
type outboxStore struct{ paho.Store }

func newOutboxStore() paho.Store { return outboxStore{paho.NewMemoryStore()} }

func (s outboxStore) Put(key string, m packets.ControlPacket) {
	if strings.HasPrefix(key, "o.") {
		return
	}
	s.Store.Put(key, m)
}
