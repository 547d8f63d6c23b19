package daemon

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"gocv.io/x/gocv"

	"github.com/leafwatch/leafwatch/internal/mqtttest"
	"github.com/leafwatch/leafwatch/internal/selfexec"
	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/model/cpu"
	"github.com/leafwatch/leafwatch/mqtt"
)

// TestMain lets the test binary run as leafwatchd, so tests can start,
// signal and kill a real daemon process.
func TestMain(m *testing.M) {
	cpu.TuneBLAS() // as leafwatchd does: the benchmarks time what users get
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

// processRig writes a config for a daemon process against broker b.
func processRig(t *testing.T, b *mqtttest.Mosquitto, class int, extra string) (cfgPath, ckpt, httpAddr string) {
	t.Helper()
	dir := t.TempDir()
	ckpt = filepath.Join(dir, "model.safetensors")
	writeConstantModel(t, ckpt, class)
	video := filepath.Join(dir, "bench.avi")
	writeTestVideo(t, video, 10)
	httpAddr = freeAddr(t)
	cfgPath = filepath.Join(dir, "leafwatchd.yaml")
	os.WriteFile(cfgPath, []byte(fmt.Sprintf(`device: proc
model: %s
state_dir: %s
listen: %s
broker: %s
reload_min_interval: 0s
mqtt: {keepalive: 2s, max_reconnect_interval: 500ms, discovery: {enabled: false}}
%scameras:
  - name: bench1
    source: file://%s?loop=true
    interval: 300ms
    decision: {threshold: 0.5, k: 2, n: 3, cooldown: 1ms}
`, ckpt, filepath.Join(dir, "state"), httpAddr, b.URL(), extra, video)), 0o644)
	return cfgPath, ckpt, httpAddr
}

// TestAlertSurvivesKill9: kill -9 during an alert, restart: the alert goes
// on under its event id (no second start for the same disease), and its
// end, when the leaves are healthy again, carries the same id.
func TestAlertSurvivesKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("full AlexNet in -short mode")
	}
	b := mqtttest.StartMosquitto(t)
	cfgPath, ckpt, _ := processRig(t, b, 0, "")
	alerts := "leafwatch/proc/bench1/alert"
	sub := mqtttest.NewSubscriber(t, b.URL(), "kill9-watch", true, alerts)
	d := startDaemon(t, cfgPath)
	mqtttest.WaitFor(t, 90*time.Second, "the alert start", func() bool { return len(sub.On(alerts)) >= 1 })
	var first mqtt.Alert
	json.Unmarshal([]byte(sub.On(alerts)[0]), &first)
	d.Process.Kill() // kill -9
	d.Wait()

	d2 := startDaemon(t, cfgPath)
	time.Sleep(4 * time.Second) // Late blight goes on: no new start may come
	writeConstantModel(t, ckpt, 3)
	d2.Process.Signal(syscall.SIGHUP)
	mqtttest.WaitFor(t, 90*time.Second, "the alert's end", func() bool {
		for _, s := range sub.On(alerts) {
			if strings.Contains(s, `"phase":"end"`) {
				return true
			}
		}
		return false
	})
	stopDaemon(t, d2)
	var events []string
	for _, s := range sub.On(alerts) {
		var a mqtt.Alert
		json.Unmarshal([]byte(s), &a)
		events = append(events, a.Phase+":"+a.EventID)
	}
	want := []string{"start:" + first.EventID, "end:" + first.EventID}
	if strings.Join(dedupe(events), ",") != strings.Join(want, ",") {
		t.Fatalf("events %v, want %v", events, want)
	}
	t.Logf("after kill -9 the alert went on and ended under %s", first.EventID)
}

func dedupe(s []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, x := range s {
		if !seen[x] {
			seen[x] = true
			out = append(out, x)
		}
	}
	return out
}

// rssKB reads a process's resident set size.
func rssKB(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			var kb int
			fmt.Sscan(f[1], &kb)
			return kb
		}
	}
	t.Fatal("no VmRSS")
	return 0
}

// metricValue reads one sample from a daemon's /metrics.
func metricValue(addr, name string) float64 {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	m := regexp.MustCompile(`(?m)^` + name + ` ([0-9.e+]+)$`).FindSubmatch(body)
	if m == nil {
		return 0
	}
	var v float64
	fmt.Sscan(string(m[1]), &v)
	return v
}

// heapFigures reads the Go runtime's memory figures from /metrics.
func heapFigures(addr string) string {
	mb := func(n string) float64 { return metricValue(addr, n) / (1 << 20) }
	return fmt.Sprintf("Go heap in use %.0f MB, idle not returned %.0f MB, runtime total %.0f MB",
		mb("go_memstats_heap_inuse_bytes"), mb("go_memstats_heap_idle_bytes")-mb("go_memstats_heap_released_bytes"), mb("go_memstats_sys_bytes"))
}

// TestRSSAfterReloads: ten model reloads under load leave the daemon's
// resident memory within 10% of its steady state (old weights are released
// at once, not kept two or three times over).
func TestRSSAfterReloads(t *testing.T) {
	if testing.Short() {
		t.Skip("full AlexNet in -short mode")
	}
	if raceEnabled {
		t.Skip("the race detector's shadow memory makes RSS meaningless; make test runs this test without -race")
	}
	b := mqtttest.StartMosquitto(t)
	cfgPath, ckpt, httpAddr := processRig(t, b, 0, "")
	d := startDaemon(t, cfgPath)
	mqtttest.WaitFor(t, 60*time.Second, "samples", func() bool { return metricValue(httpAddr, `leafwatch_frames_classified_total{camera="bench1"}`) >= 5 })
	time.Sleep(2 * time.Second)
	steady := rssKB(t, d.Process.Pid)
	t.Logf("steady: %s", heapFigures(httpAddr))
	for i := 1; i <= 10; i++ {
		writeConstantModel(t, ckpt, i%4)
		d.Process.Signal(syscall.SIGHUP)
		mqtttest.WaitFor(t, 60*time.Second, fmt.Sprintf("reload %d", i), func() bool {
			return metricValue(httpAddr, "leafwatch_model_reloads_total") >= float64(i)
		})
	}
	peak := rssKB(t, d.Process.Pid)
	// A reload started by the file watcher (it saw a file written before
	// its SIGHUP) may still hold both models: wait for it to end.
	mqtttest.WaitFor(t, 60*time.Second, "no reload running", func() bool {
		return metricValue(httpAddr, "leafwatch_model_reload_in_progress") == 0
	})
	time.Sleep(3 * time.Second)
	after := rssKB(t, d.Process.Pid)
	t.Logf("RSS: steady %d MB, right after 10 reloads %d MB, 3 s later %d MB (%s)", steady>>10, peak>>10, after>>10, heapFigures(httpAddr))
	stopDaemon(t, d)
	if float64(after) > 1.10*float64(steady) {
		t.Errorf("RSS %d MB after 10 reloads, steady state %d MB: more than 10%% above", after>>10, steady>>10)
	}
}
