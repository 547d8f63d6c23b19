package daemon

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"gocv.io/x/gocv"

	"github.com/leafwatch/leafwatch/internal/mqtttest"
	"github.com/leafwatch/leafwatch/internal/selfexec"
	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/mqtt"
)

// TestMain lets the test binary run as leafwatchd, so tests can start,
// signal and kill a real daemon process.
func TestMain(m *testing.M) {
	if cfg := os.Getenv("LEAFWATCHD_TEST_CONFIG"); cfg != "" {
		log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		if err := RunFile(cfg, log); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

var processLabels = []string{"Tomato___Late_blight", "Tomato___Leaf_Mold", "Tomato___Target_Spot", "Tomato___healthy"}

// writeConstantModel saves a checkpoint that answers class idx for every
// image (zero last-layer weights, a strong bias): the test knows the truth.
func writeConstantModel(t *testing.T, path string, idx int) {
	t.Helper()
	m, err := model.NewRandom(model.TorchVision, 4, 1)
	if err != nil {
		t.Fatal(err)
	}
	m.Meta.Labels = processLabels
	clear(m.Params["classifier.6.weight"].Data)
	b := m.Params["classifier.6.bias"].Data
	clear(b)
	b[idx] = 6
	if err := m.Save(path); err != nil {
		t.Fatal(err)
	}
}

func startDaemon(t *testing.T, cfg string) *exec.Cmd {
	t.Helper()
	cmd := selfexec.Command("-test.run=^$")
	cmd.Env = append(os.Environ(), "LEAFWATCHD_TEST_CONFIG="+cfg)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
	})
	return cmd
}

// stopDaemon sends SIGTERM and checks a clean exit within 10 s.
func stopDaemon(t *testing.T, cmd *exec.Cmd) time.Duration {
	t.Helper()
	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("daemon exited with %v after SIGTERM", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("daemon did not exit within 10 s of SIGTERM")
	}
	return time.Since(start)
}

// TestDaemonProcessThroughBrokerOutage: a real leafwatchd process with a
// real mosquitto. Alerts are decided (start, end on a model swap via
// SIGHUP, a new start) while mosquitto is down, the daemon is stopped with
// SIGTERM and restarted, mosquitto comes back: the subscriber receives
// every event, in order. A corrupt checkpoint pushed on SIGHUP is refused.
func TestDaemonProcessThroughBrokerOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("full AlexNet in -short mode")
	}
	b := mqtttest.StartMosquitto(t)
	dir := t.TempDir()
	ckpt := filepath.Join(dir, "model.safetensors")
	writeConstantModel(t, ckpt, 0) // Late blight
	video := filepath.Join(dir, "bench.avi")
	vw, err := gocv.VideoWriterFile(video, "MJPG", 10, 320, 240, true)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		f := gocv.NewMatWithSizeFromScalar(gocv.NewScalar(40, 120, 60, 0), 240, 320, gocv.MatTypeCV8UC3)
		vw.Write(f)
		f.Close()
	}
	vw.Close()
	cfgPath := filepath.Join(dir, "leafwatchd.yaml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`device: proc
model: %s
state_dir: %s
listen: 127.0.0.1:0
broker: %s
mqtt: {keepalive: 2s, max_reconnect_interval: 500ms, discovery: {enabled: false}}
cameras:
  - name: bench1
    source: file://%s?loop=true
    interval: 300ms
    decision: {threshold: 0.5, k: 2, n: 3, cooldown: 1ms}
`, ckpt, filepath.Join(dir, "state"), b.URL(), video)), 0o644)

	alerts := "leafwatch/proc/bench1/alert"
	sub := mqtttest.NewSubscriber(t, b.URL(), "proc-watch", false, alerts, "leafwatch/proc/availability")
	d := startDaemon(t, cfgPath)
	mqtttest.WaitFor(t, 90*time.Second, "the first alert start", func() bool { return len(sub.On(alerts)) >= 1 })

	// Broker down; decisions go on.
	sub.C.Disconnect(100)
	before := sub
	b.Stop()
	os.WriteFile(ckpt+".bad", []byte("corrupt"), 0o644)
	os.Rename(ckpt+".bad", ckpt)
	d.Process.Signal(syscall.SIGHUP) // refused: the Late-blight model keeps serving
	time.Sleep(1500 * time.Millisecond)
	// Wait for the decisions themselves (queued in the outbox while the
	// broker is down), not for a fixed time: under emulation (arm64 tests
	// run in qemu) every sample is much slower.
	outbox := filepath.Join(dir, "state", "outbox")
	writeConstantModel(t, ckpt, 3) // healthy → the alert ends
	d.Process.Signal(syscall.SIGHUP)
	mqtttest.WaitFor(t, 90*time.Second, "the alert end in the outbox", func() bool { return queuedAlerts(outbox) >= 1 })
	writeConstantModel(t, ckpt, 1) // Leaf mold → a new alert
	d.Process.Signal(syscall.SIGHUP)
	mqtttest.WaitFor(t, 90*time.Second, "the new alert in the outbox", func() bool { return queuedAlerts(outbox) >= 2 })
	took := stopDaemon(t, d)
	pending, _ := os.ReadDir(filepath.Join(dir, "state", "outbox"))
	t.Logf("daemon stopped in %v with %d outbox entries on disk", took, len(pending))

	// Restart the daemon, then the broker.
	d2 := startDaemon(t, cfgPath)
	time.Sleep(time.Second)
	b.Start()
	sub = mqtttest.NewSubscriber(t, b.URL(), "proc-watch", false, alerts, "leafwatch/proc/availability")
	want := []string{"start:Tomato___Late_blight", "end:Tomato___Late_blight", "start:Tomato___Leaf_Mold"}
	var got []string
	mqtttest.WaitFor(t, 90*time.Second, "every alert after the outage", func() bool {
		got = got[:0]
		seen := map[string]bool{}
		for _, p := range append(before.On(alerts), sub.On(alerts)...) {
			var a mqtt.Alert
			json.Unmarshal([]byte(p), &a)
			if key := a.EventID + a.Phase; !seen[key] {
				seen[key] = true
				got = append(got, a.Phase+":"+a.Label)
			}
		}
		return len(got) >= len(want)
	})
	if strings.Join(got[:len(want)], ",") != strings.Join(want, ",") {
		t.Fatalf("alerts %v, want %v in this order", got, want)
	}
	took = stopDaemon(t, d2)
	mqtttest.WaitFor(t, 5*time.Second, "offline on clean exit", func() bool {
		a := sub.On("leafwatch/proc/availability")
		return len(a) > 0 && a[len(a)-1] == mqtt.Offline
	})
	t.Logf("alerts delivered in order after the outage: %v; second shutdown %v", got, took)
}

// queuedAlerts counts alert messages waiting in an outbox folder.
func queuedAlerts(dir string) int {
	des, _ := os.ReadDir(dir)
	n := 0
	for _, de := range des {
		if b, err := os.ReadFile(filepath.Join(dir, de.Name())); err == nil && strings.Contains(string(b), `"kind":"alert"`) {
			n++
		}
	}
	return n
}
