// Package mqtttest starts a real mosquitto broker on a free loopback port
// and records what a paho subscriber receives, for tests in any package.
package mqtttest

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
)

// mosquitto is a real broker on a free loopback port, started per test.
type Mosquitto struct {
	t    testing.TB
	dir  string
	Port int
	conf string
	cmd  *exec.Cmd
	log  *bytes.Buffer
}

func MosquittoPath(t testing.TB) string {
	for _, p := range []string{"/usr/sbin/mosquitto", "/usr/bin/mosquitto"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p
	}
	t.Skip("mosquitto is not installed (make deps installs it)")
	return ""
}

func FreePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// startMosquitto writes a config with the given extra lines for the
// listener and starts the broker.
func StartMosquitto(t testing.TB, extra ...string) *Mosquitto {
	t.Helper()
	m := &Mosquitto{t: t, dir: t.TempDir(), Port: FreePort(t)}
	conf := []string{
		fmt.Sprintf("listener %d 127.0.0.1", m.Port),
		"persistence true",
		"persistence_location " + m.dir + "/",
		"log_dest stderr",
		"log_type error",
		"log_type warning",
	}
	if os.Geteuid() == 0 {
		// mosquitto started as root drops to user "mosquitto", which cannot
		// read the test's private temp files.
		conf = append(conf, "user root")
	}
	if !strings.Contains(strings.Join(extra, "\n"), "password_file") {
		conf = append(conf, "allow_anonymous true")
	}
	conf = append(conf, extra...)
	m.conf = filepath.Join(m.dir, "mosquitto.conf")
	if err := os.WriteFile(m.conf, []byte(strings.Join(conf, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m.Start()
	t.Cleanup(m.Stop)
	return m
}

func (m *Mosquitto) Start() {
	m.t.Helper()
	m.log = new(bytes.Buffer)
	m.cmd = exec.Command(MosquittoPath(m.t), "-c", m.conf)
	m.cmd.Stdout, m.cmd.Stderr = m.log, m.log
	if err := m.cmd.Start(); err != nil {
		m.t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.Dial("tcp", m.Addr()); err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	m.t.Fatalf("mosquitto did not start: %s", m.log)
}

// stop shuts mosquitto down gracefully, so it saves persistent sessions.
func (m *Mosquitto) Stop() {
	if m.cmd == nil || m.cmd.Process == nil {
		return
	}
	m.cmd.Process.Signal(os.Interrupt)
	done := make(chan struct{})
	go func() { m.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		m.cmd.Process.Kill()
		<-done
	}
	m.cmd = nil
}

func (m *Mosquitto) Addr() string { return fmt.Sprintf("127.0.0.1:%d", m.Port) }
func (m *Mosquitto) URL() string  { return "tcp://" + m.Addr() }

// subscriber records every message on its filters.
type Subscriber struct {
	C    paho.Client
	mu   sync.Mutex
	msgs []paho.Message
	at   []time.Time
}

// Msg is one received message with its arrival time.
type Msg struct {
	Payload string
	At      time.Time
}

func NewSubscriber(t testing.TB, broker, id string, clean bool, filters ...string) *Subscriber {
	t.Helper()
	s := &Subscriber{}
	o := paho.NewClientOptions().AddBroker(broker).SetClientID(id).SetCleanSession(clean).
		SetAutoReconnect(true).SetConnectRetry(true).SetConnectRetryInterval(200 * time.Millisecond).
		SetMaxReconnectInterval(500 * time.Millisecond).SetOrderMatters(true)
	subs := map[string]byte{}
	for _, f := range filters {
		subs[f] = 1
	}
	o.SetOnConnectHandler(func(c paho.Client) {
		c.SubscribeMultiple(subs, s.record)
	})
	// Messages for a resumed session can arrive before the subscription
	// handler is set: route them here too.
	o.SetDefaultPublishHandler(s.record)
	s.C = paho.NewClient(o)
	if tok := s.C.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber connect: %v", tok.Error())
	}
	time.Sleep(100 * time.Millisecond) // let the subscription settle
	t.Cleanup(func() { s.C.Disconnect(100) })
	return s
}

func (s *Subscriber) record(_ paho.Client, m paho.Message) {
	s.mu.Lock()
	s.msgs = append(s.msgs, m)
	s.at = append(s.at, time.Now())
	s.mu.Unlock()
}

// Received returns the messages on a topic with their arrival times.
func (s *Subscriber) Received(topic string) []Msg {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Msg
	for i, m := range s.msgs {
		if m.Topic() == topic {
			out = append(out, Msg{string(m.Payload()), s.at[i]})
		}
	}
	return out
}

// on returns the payloads received on a topic so far.
func (s *Subscriber) On(topic string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, m := range s.msgs {
		if m.Topic() == topic {
			out = append(out, string(m.Payload()))
		}
	}
	return out
}

// waitFor polls until cond holds or the timeout passes.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("timed out after %v waiting for %s", timeout, what)
}
