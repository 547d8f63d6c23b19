package mqtt

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"

	"github.com/leafwatch/leafwatch/internal/mqtttest"
	"github.com/leafwatch/leafwatch/internal/selfexec"
)

// TestMain doubles as a helper process for tests that must kill a real
// publishing process.
func TestMain(m *testing.M) {
	if mode := os.Getenv("LEAFWATCH_MQTT_HELPER"); mode != "" {
		os.Exit(helperMain(mode))
	}
	os.Exit(m.Run())
}

func helperConfig() Config {
	cfg := DefaultConfig("helper")
	cfg.Broker = os.Getenv("LEAFWATCH_BROKER")
	cfg.KeepAlive = 2 * time.Second
	cfg.MaxReconnectInterval = 500 * time.Millisecond
	cfg.Discovery.Enabled = false
	return cfg
}

func helperMain(mode string) int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ob, err := OpenOutbox(os.Getenv("LEAFWATCH_OUTBOX"), 1<<20, log)
	if err != nil {
		fmt.Println("ERROR", err)
		return 1
	}
	p, err := NewPublisher(helperConfig(), Options{Outbox: ob, Logger: log})
	if err != nil {
		fmt.Println("ERROR", err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { p.Run(ctx, 5*time.Second); close(done) }()
	switch mode {
	case "online":
		fmt.Println("READY")
		select {}
	case "enqueue":
		n, _ := strconv.Atoi(os.Getenv("LEAFWATCH_N"))
		for i := 0; i < n; i++ {
			a := Alert{EventID: fmt.Sprintf("evt-%03d", i), Phase: AlertStart, Camera: "bench", Label: "Tomato___Late_blight", Start: time.Now()}
			if err := p.Alert(a); err != nil {
				fmt.Println("ERROR", err)
				return 1
			}
		}
		fmt.Println("ENQUEUED")
		select {} // killed by the test
	case "deliver":
		for ob.Len() > 0 {
			time.Sleep(50 * time.Millisecond)
		}
		cancel()
		<-done
		fmt.Println("DRAINED", p.Delivered())
		return 0
	}
	return 2
}

// helper starts this test binary as a publishing process.
func helper(t *testing.T, mode, broker, outbox string, env ...string) (*exec.Cmd, *bufio.Scanner) {
	t.Helper()
	cmd := selfexec.Command("-test.run=^$")
	cmd.Env = append(os.Environ(), "LEAFWATCH_MQTT_HELPER="+mode, "LEAFWATCH_BROKER="+broker, "LEAFWATCH_OUTBOX="+outbox)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	return cmd, bufio.NewScanner(out)
}

func expectLine(t *testing.T, sc *bufio.Scanner, prefix string, timeout time.Duration) string {
	t.Helper()
	got := make(chan string, 1)
	go func() {
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), prefix) || strings.HasPrefix(sc.Text(), "ERROR") {
				got <- sc.Text()
				return
			}
		}
		got <- "EOF"
	}()
	select {
	case l := <-got:
		if !strings.HasPrefix(l, prefix) {
			t.Fatalf("helper said %q, want %s", l, prefix)
		}
		return l
	case <-time.After(timeout):
		t.Fatalf("helper did not say %s within %v", prefix, timeout)
	}
	return ""
}

func testPublisher(t *testing.T, cfg Config, opt Options) (*Publisher, context.CancelFunc) {
	t.Helper()
	if opt.Outbox == nil {
		ob, err := OpenOutbox(t.TempDir(), 1<<20, nil)
		if err != nil {
			t.Fatal(err)
		}
		opt.Outbox = ob
	}
	p, err := NewPublisher(cfg, opt)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx, 2*time.Second); close(done) }()
	stop := func() { cancel(); <-done }
	t.Cleanup(stop)
	return p, cancel
}

func cfgFor(broker, device string) Config {
	c := DefaultConfig(device)
	c.Broker = broker
	c.KeepAlive = 2 * time.Second
	c.MaxReconnectInterval = 500 * time.Millisecond
	return c
}

func TestPasswordAuth(t *testing.T) {
	mp := mqtttest.MosquittoPath(t)
	dir := t.TempDir()
	pwfile := filepath.Join(dir, "passwd")
	if out, err := exec.Command(filepath.Join(filepath.Dir(mp), "..", "bin", "mosquitto_passwd"), "-b", "-c", pwfile, "leaf", "s3cret").CombinedOutput(); err != nil {
		if out2, err2 := exec.Command("mosquitto_passwd", "-b", "-c", pwfile, "leaf", "s3cret").CombinedOutput(); err2 != nil {
			t.Fatalf("mosquitto_passwd: %v %s %s", err, out, out2)
		}
	}
	os.Chmod(pwfile, 0o600)
	b := mqtttest.StartMosquitto(t, "password_file "+pwfile, "allow_anonymous false")

	good := filepath.Join(dir, "good")
	os.WriteFile(good, []byte("s3cret\n"), 0o600)
	cfg := cfgFor(b.URL(), "auth1")
	cfg.Username, cfg.PasswordFile = "leaf", good
	p, _ := testPublisher(t, cfg, Options{})
	mqtttest.WaitFor(t, 10*time.Second, "connect with the right password", p.Connected)

	t.Setenv("LEAFWATCH_TEST_PW", "wrong")
	bad := cfgFor(b.URL(), "auth2")
	bad.Username, bad.PasswordEnv = "leaf", "LEAFWATCH_TEST_PW"
	q, _ := testPublisher(t, bad, Options{})
	time.Sleep(1500 * time.Millisecond)
	if q.Connected() {
		t.Fatal("connected with a wrong password")
	}
}

// writeTestPKI creates a CA and a server certificate for 127.0.0.1.
func writeTestPKI(t *testing.T, dir string) (ca, cert, key string) {
	t.Helper()
	caKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	caTpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "leafwatch test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTpl, caTpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	srvKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	srvTpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name, typ string, der []byte) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
		return p
	}
	return write("ca.pem", "CERTIFICATE", caDER), write("server.pem", "CERTIFICATE", srvDER),
		write("server.key", "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(srvKey))
}

func TestTLSWithTestCA(t *testing.T) {
	mqtttest.MosquittoPath(t)
	dir := t.TempDir()
	ca, cert, key := writeTestPKI(t, dir)
	b := mqtttest.StartMosquitto(t, "cafile "+ca, "certfile "+cert, "keyfile "+key)
	url := fmt.Sprintf("ssl://127.0.0.1:%d", b.Port)

	cfg := cfgFor(url, "tls1")
	cfg.CAFile = ca
	p, _ := testPublisher(t, cfg, Options{})
	mqtttest.WaitFor(t, 10*time.Second, "TLS connection trusting the test CA", p.Connected)

	untrusted := cfgFor(url, "tls2")
	q, _ := testPublisher(t, untrusted, Options{})
	time.Sleep(1500 * time.Millisecond)
	if q.Connected() {
		t.Fatal("connected to a broker whose CA is not trusted")
	}
	if err := (Config{CAFile: filepath.Join(dir, "absent.pem"), Broker: url}).Validate(); err == nil {
		// Validate is about shape; the missing file is reported by NewPublisher.
		if _, err := NewPublisher(func() Config { c := cfgFor(url, "x"); c.CAFile = filepath.Join(dir, "absent.pem"); return c }(), Options{Outbox: p.outbox}); err == nil || !strings.Contains(err.Error(), "ca_file") {
			t.Fatalf("missing CA file: %v", err)
		}
	}
}

func TestLastWillWhenProcessIsKilled(t *testing.T) {
	b := mqtttest.StartMosquitto(t)
	sub := mqtttest.NewSubscriber(t, b.URL(), "will-watch", true, "leafwatch/helper/availability")
	cmd, sc := helper(t, "online", b.URL(), t.TempDir())
	expectLine(t, sc, "READY", 10*time.Second)
	mqtttest.WaitFor(t, 10*time.Second, "online", func() bool {
		got := sub.On("leafwatch/helper/availability")
		return len(got) > 0 && got[len(got)-1] == Online
	})
	cmd.Process.Kill()
	mqtttest.WaitFor(t, 10*time.Second, "offline from the last will", func() bool {
		got := sub.On("leafwatch/helper/availability")
		return got[len(got)-1] == Offline
	})
}

func TestRetainedStateAndDiscoveryForLateSubscriber(t *testing.T) {
	b := mqtttest.StartMosquitto(t)
	cfg := cfgFor(b.URL(), "gh2")
	p, _ := testPublisher(t, cfg, Options{Cameras: []string{"bench1", "bench2"}, SWVersion: "test"})
	mqtttest.WaitFor(t, 10*time.Second, "connect", p.Connected)
	c := Classification{Camera: "bench1", Label: "Tomato___Late_blight", Display: "Tomato: Late blight", Confidence: 0.93, Disease: true,
		Top: []Scored{{"Tomato___Late_blight", 0.93}}, Model: "abc", FrameTime: time.Now().UTC()}
	if err := p.State(c, true); err != nil {
		t.Fatal(err)
	}
	mqtttest.WaitFor(t, 10*time.Second, "state delivered", func() bool { return p.Outbox().Len() == 0 })

	late := mqtttest.NewSubscriber(t, b.URL(), "late", true, "leafwatch/#", "homeassistant/#")
	mqtttest.WaitFor(t, 5*time.Second, "retained state", func() bool { return len(late.On(p.Topics().State("bench1"))) > 0 })
	var got Classification
	if err := json.Unmarshal([]byte(late.On(p.Topics().State("bench1"))[0]), &got); err != nil || got.Label != c.Label || !got.Disease {
		t.Fatalf("retained state %+v (%v)", got, err)
	}
	if a := late.On(p.Topics().Availability()); len(a) == 0 || a[0] != Online {
		t.Fatalf("availability %v", a)
	}
	for topic := range DiscoveryMessages(cfg, []string{"bench1", "bench2"}, "test") {
		mqtttest.WaitFor(t, 5*time.Second, "discovery "+topic, func() bool { return len(late.On(topic)) > 0 })
		var hc map[string]any
		json.Unmarshal([]byte(late.On(topic)[0]), &hc)
		dev, _ := hc["device"].(map[string]any)
		if hc["availability_topic"] != p.Topics().Availability() || dev["sw_version"] != "test" {
			t.Errorf("%s: %v", topic, hc)
		}
	}
	// Home Assistant restarting asks for discovery again.
	ha := mqtttest.NewSubscriber(t, b.URL(), "ha", true, "homeassistant/sensor/#")
	before := len(ha.On("homeassistant/sensor/gh2/bench1_label/config"))
	ha.C.Publish("homeassistant/status", 1, false, "online").Wait()
	mqtttest.WaitFor(t, 5*time.Second, "discovery republished after HA birth", func() bool {
		return len(ha.On("homeassistant/sensor/gh2/bench1_label/config")) > before
	})
}

// TestOutageNothingLost is the outage test: the broker is down,
// alerts are decided, the publishing process is killed and restarted, the
// broker comes back, and a subscriber receives every event id in order.
func TestOutageNothingLost(t *testing.T) {
	const n = 20
	b := mqtttest.StartMosquitto(t)
	// A persistent subscriber session (QoS 1) that outlives the outage.
	sub := mqtttest.NewSubscriber(t, b.URL(), "outage-watch", false, "leafwatch/helper/bench/alert")
	sub.C.Disconnect(100)
	b.Stop()

	outbox := t.TempDir()
	cmd, sc := helper(t, "enqueue", b.URL(), outbox, "LEAFWATCH_N="+strconv.Itoa(n))
	expectLine(t, sc, "ENQUEUED", 20*time.Second)
	cmd.Process.Kill() // power cut: no clean shutdown
	cmd.Wait()

	deliver, sc2 := helper(t, "deliver", b.URL(), outbox)
	time.Sleep(500 * time.Millisecond) // the publisher retries against a dead broker
	b.Start()
	sub = mqtttest.NewSubscriber(t, b.URL(), "outage-watch", false, "leafwatch/helper/bench/alert")
	line := expectLine(t, sc2, "DRAINED", 30*time.Second)
	deliver.Wait()
	mqtttest.WaitFor(t, 10*time.Second, fmt.Sprintf("%d alerts", n), func() bool { return len(sub.On("leafwatch/helper/bench/alert")) >= n })
	got := sub.On("leafwatch/helper/bench/alert")
	seen, dups, last := map[string]bool{}, 0, -1
	for _, p := range got {
		var a Alert
		if err := json.Unmarshal([]byte(p), &a); err != nil {
			t.Fatal(err)
		}
		if seen[a.EventID] {
			dups++
			continue
		}
		seen[a.EventID] = true
		i, _ := strconv.Atoi(strings.TrimPrefix(a.EventID, "evt-"))
		if i != last+1 {
			t.Fatalf("event %s arrived after evt-%03d: out of order", a.EventID, last)
		}
		last = i
	}
	if len(seen) != n {
		t.Fatalf("received %d distinct alerts, want %d", len(seen), n)
	}
	t.Logf("outage: %d alerts decided, %d delivered distinct, %d duplicates (%s)", n, len(seen), dups, line)
}

func TestMalformedCommandsGetErrorReplies(t *testing.T) {
	b := mqtttest.StartMosquitto(t)
	handled := make(chan Command, 10)
	h := CommandFunc(func(ctx context.Context, c Command) (any, error) {
		handled <- c
		if c.Name == CmdReload {
			return nil, fmt.Errorf("checkpoint is corrupt")
		}
		return map[string]string{"camera": c.Camera}, nil
	})
	p, _ := testPublisher(t, cfgFor(b.URL(), "gh3"), Options{Commands: h})
	mqtttest.WaitFor(t, 10*time.Second, "connect", p.Connected)
	time.Sleep(200 * time.Millisecond)
	sub := mqtttest.NewSubscriber(t, b.URL(), "cmd-watch", true, p.Topics().Result())
	send := func(name, payload string) {
		sub.C.Publish(p.Topics().Command(name), 1, false, payload).Wait()
	}
	send("explode", `{}`)
	send("classify", `{"camera":`)
	send("snapshot", `{"camera":"bench1","extra":1}`)
	send("classify", `{"id":"ok1","camera":"bench1"}`)
	send("reload", `{"id":"r1"}`)
	mqtttest.WaitFor(t, 10*time.Second, "5 results", func() bool { return len(sub.On(p.Topics().Result())) >= 5 })
	results := map[string]Result{}
	var errs int
	for _, s := range sub.On(p.Topics().Result()) {
		var r Result
		if err := json.Unmarshal([]byte(s), &r); err != nil {
			t.Fatal(err)
		}
		if r.ID != "" {
			results[r.ID] = r
		}
		if !r.OK {
			errs++
		}
	}
	if errs != 4 {
		t.Errorf("%d error replies, want 4", errs)
	}
	if r := results["ok1"]; !r.OK {
		t.Errorf("valid classify: %+v", r)
	}
	if r := results["r1"]; r.OK || !strings.Contains(r.Error, "corrupt") {
		t.Errorf("failed reload reported as %+v", r)
	}
	if len(handled) != 2 {
		t.Errorf("handler saw %d commands, want only the 2 valid ones", len(handled))
	}
	if !p.Connected() {
		t.Error("publisher lost its connection over bad commands")
	}
}

func TestEmbeddedBrokerServesPaho(t *testing.T) {
	br, err := StartBroker(BrokerConfig{Address: "127.0.0.1:0"}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer br.Close()
	if !strings.HasPrefix(br.Addr(), "127.0.0.1:") {
		t.Fatalf("embedded broker listens on %s, want loopback", br.Addr())
	}
	sub := mqtttest.NewSubscriber(t, br.URL(), "emb-sub", true, "leafwatch/#")
	p, _ := testPublisher(t, cfgFor(br.URL(), "gh4"), Options{})
	mqtttest.WaitFor(t, 10*time.Second, "connect", p.Connected)
	if err := p.Alert(Alert{EventID: "e1", Phase: AlertStart, Camera: "c1", Label: "x"}); err != nil {
		t.Fatal(err)
	}
	mqtttest.WaitFor(t, 10*time.Second, "alert through the embedded broker", func() bool { return len(sub.On(p.Topics().Alert("c1"))) == 1 })

	// With users configured, wrong credentials are refused.
	secured, err := StartBroker(BrokerConfig{Address: "127.0.0.1:0", Users: map[string]string{"u": "p"}}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer secured.Close()
	c := paho.NewClient(paho.NewClientOptions().AddBroker(secured.URL()).SetClientID("x").SetUsername("u").SetPassword("nope"))
	if tok := c.Connect(); tok.WaitTimeout(5*time.Second) && tok.Error() == nil {
		t.Fatal("embedded broker accepted a wrong password")
	}
	// A port in use is a clear error.
	if _, err := StartBroker(BrokerConfig{Address: br.Addr()}, nil); err == nil {
		t.Fatal("second broker on the same port started")
	}
}
