package mqtt

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// Command names accepted on <prefix>/<device>/cmd/<name>.
const (
	CmdReload   = "reload"   // reload the model checkpoint
	CmdClassify = "classify" // capture and classify now
	CmdSnapshot = "snapshot" // publish a snapshot now
	CmdInstall  = "install"  // install the model announced to the device's group
	CmdRollback = "rollback" // serve the model that served before the last update
)

// KnownCommands lists the accepted command names.
var KnownCommands = []string{CmdReload, CmdClassify, CmdSnapshot, CmdInstall, CmdRollback}

// Command is a parsed request. The payload is a JSON object with optional
// "id" (echoed in the result) and "camera" (for classify and snapshot);
// an empty payload means {}.
type Command struct {
	Name   string `json:"-"`
	ID     string `json:"id"`
	Camera string `json:"camera"`
}

// Result is published on <prefix>/<device>/cmd_result for every command,
// accepted or not.
type Result struct {
	ID      string    `json:"id,omitempty"`
	Command string    `json:"command"`
	OK      bool      `json:"ok"`
	Error   string    `json:"error,omitempty"`
	Detail  any       `json:"detail,omitempty"`
	Time    time.Time `json:"time"`
}

// CommandHandler carries out accepted commands.
type CommandHandler interface {
	HandleCommand(ctx context.Context, c Command) (detail any, err error)
}

// CommandFunc adapts a function to CommandHandler.
type CommandFunc func(ctx context.Context, c Command) (any, error)

func (f CommandFunc) HandleCommand(ctx context.Context, c Command) (any, error) { return f(ctx, c) }

const maxCommandPayload = 4 << 10

// maxRunningCommands bounds the commands carried out at once; more are
// answered "busy" at once instead of piling up goroutines.
const maxRunningCommands = 2

// ParseCommand validates a command strictly: known name, a JSON object with
// known fields only, bounded size.
func ParseCommand(name string, payload []byte) (Command, error) {
	known := false
	for _, k := range KnownCommands {
		known = known || k == name
	}
	if !known {
		return Command{Name: name}, fmt.Errorf("unknown command %q (known: %s)", name, strings.Join(KnownCommands, ", "))
	}
	c := Command{Name: name}
	if len(payload) > maxCommandPayload {
		return c, fmt.Errorf("payload of %d bytes is larger than %d", len(payload), maxCommandPayload)
	}
	trimmed := bytes.TrimSpace(payload)
	if len(trimmed) == 0 {
		return c, nil
	}
	if trimmed[0] != '{' {
		return c, fmt.Errorf("payload must be empty or a JSON object with optional \"id\" and \"camera\", not %.20q", trimmed)
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return Command{Name: name}, fmt.Errorf("payload must be a JSON object with optional \"id\" and \"camera\": %v", err)
	}
	if dec.More() {
		return Command{Name: name, ID: c.ID}, errors.New("payload has trailing data after the JSON object")
	}
	if c.Camera != "" && !ValidName(c.Camera) {
		return c, fmt.Errorf("camera %q is not a camera name", c.Camera)
	}
	return c, nil
}

func (p *Publisher) onCommand(_ paho.Client, m paho.Message) {
	name := strings.TrimPrefix(m.Topic(), p.topics.Command(""))
	if len(m.Payload()) == 0 && p.wasCleared(m.Topic()) {
		return // our own clearing of a retained command, coming back
	}
	if m.Retained() {
		// A retained command would run again at every reconnect. Clear it
		// (where the broker lets us) and say why it did not run.
		p.log.Warn("ignored a retained MQTT command; publish commands without the retain flag", "topic", m.Topic())
		p.markCleared(m.Topic())
		p.client.Publish(m.Topic(), 1, true, []byte{})
		res := Result{Command: name, Error: "retained command ignored (it would run again at every reconnect): publish commands without the retain flag", Time: time.Now().UTC()}
		p.client.Publish(p.topics.Result(), 1, false, mustJSON(res))
		return
	}
	c, err := ParseCommand(name, m.Payload())
	res := Result{ID: c.ID, Command: name, Time: time.Now().UTC()}
	if err != nil {
		p.log.Warn("rejected MQTT command", "topic", m.Topic(), "err", err)
		res.Error = err.Error()
		p.client.Publish(p.topics.Result(), 1, false, mustJSON(res))
		return
	}
	select {
	case p.cmdSlots <- struct{}{}:
	default:
		res.Error = fmt.Sprintf("busy: %d commands are running; try again", maxRunningCommands)
		p.log.Warn("MQTT command refused: too many running", "command", name)
		p.client.Publish(p.topics.Result(), 1, false, mustJSON(res))
		return
	}
	// Handlers may be slow (a model reload); run them off paho's goroutine.
	go func() {
		defer func() { <-p.cmdSlots }()
		defer func() {
			if r := recover(); r != nil {
				p.log.Error("command handler panicked", "command", name, "panic", r)
				res.OK, res.Error = false, fmt.Sprintf("internal error: %v", r)
				p.client.Publish(p.topics.Result(), 1, false, mustJSON(res))
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		detail, err := p.commands.HandleCommand(ctx, c)
		res.Detail = detail
		if err != nil {
			res.Error = err.Error()
			p.log.Warn("MQTT command failed", "command", name, "err", err)
		} else {
			res.OK = true
			p.log.Info("MQTT command done", "command", name, "id", c.ID)
		}
		p.client.Publish(p.topics.Result(), 1, false, mustJSON(res))
	}()
}

// markCleared remembers that we cleared a retained command on topic: the
// empty message the broker forwards back is not a command.
func (p *Publisher) markCleared(topic string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cleared == nil {
		p.cleared = map[string]time.Time{}
	}
	p.cleared[topic] = time.Now()
}

func (p *Publisher) wasCleared(topic string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	at, ok := p.cleared[topic]
	delete(p.cleared, topic)
	return ok && time.Since(at) < time.Minute
}
