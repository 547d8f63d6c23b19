package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/leafwatch/leafwatch/internal/mqtttest"
	"github.com/leafwatch/leafwatch/mqtt"
)

// Tests for the defects a season of unattended running would meet.

// TestStaleAlertEndsAfterLongDowntime: an alert saved as ongoing by a
// daemon that then stayed down for hours is ended explicitly at start.
func TestStaleAlertEndsAfterLongDowntime(t *testing.T) {
	b := mqtttest.StartMosquitto(t)
	sub := mqtttest.NewSubscriber(t, b.URL(), "stale-sub", true, "leafwatch/rig/bench1/alert")
	old := time.Now().Add(-3 * time.Hour)
	newRig(t, rigOptions{class: 3, broker: b.URL(), before: func(stateDir string) { // a healthy model
		store, _ := openDecisionStore(stateDir, "bench1")
		store.save(DecisionState{Active: &Event{ID: "rig-bench1-old-0001", Phase: mqtt.AlertStart, Label: processLabels[0], Start: old},
			Last: map[string]time.Time{processLabels[0]: old}, Seq: 1, SavedAt: old})
	}})
	mqtttest.WaitFor(t, 20*time.Second, "the stale alert's end", func() bool { return len(sub.On("leafwatch/rig/bench1/alert")) > 0 })
	var a mqtt.Alert
	json.Unmarshal([]byte(sub.On("leafwatch/rig/bench1/alert")[0]), &a)
	if a.EventID != "rig-bench1-old-0001" || a.Phase != mqtt.AlertEnd || a.Reason != EndStale || a.End.Sub(old).Abs() > time.Second {
		t.Fatalf("got %+v, want the stale alert ended at its last save", a)
	}
}

// TestWatchdogReflectsLiveness: with a 5-minute sampling interval and a
// 0.6 s watchdog, systemd still gets WATCHDOG=1 every 0.2 s (it used to
// wait for a camera tick and be killed every minute).
func TestWatchdogReflectsLiveness(t *testing.T) {
	sockPath := filepath.Join(t.TempDir(), "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sockPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	t.Setenv("NOTIFY_SOCKET", sockPath)
	t.Setenv("WATCHDOG_USEC", "600000")
	t.Setenv("WATCHDOG_PID", "")
	newRig(t, rigOptions{camera: "    interval: 5m\n"})
	var ready bool
	pings := 0
	conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	buf := make([]byte, 256)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			break
		}
		switch string(buf[:n]) {
		case "READY=1":
			ready = true
		case "WATCHDOG=1":
			pings++
		}
	}
	if !ready || pings < 6 {
		t.Fatalf("over 3 s: READY=%v, %d watchdog pings (want ≥ 6 with WatchdogSec=0.6s and a 5 min interval)", ready, pings)
	}
}

// TestCommandsUseTheNewestFrame: classify and snapshot commands work on
// the newest frame even when the scheduled sample just used it, and the
// snapshot is shrunk to fit the thumbnail cap or the command fails.
func TestCommandsUseTheNewestFrame(t *testing.T) {
	dir := t.TempDir()
	writeTestImages(t, dir, 3, 1920, 1080)
	r := newRig(t, rigOptions{source: "folder://" + dir + "?fps=0.2&loop=true"})
	sub := mqtttest.NewSubscriber(t, r.broker, "cmd-sub", true, "leafwatch/rig/bench1/thumbnail")
	mqtttest.WaitFor(t, 20*time.Second, "a scheduled sample", func() bool { return r.d.cams[0].snapshotJPEG() != nil })
	time.Sleep(500 * time.Millisecond) // the next scheduled samples find no new frame
	for i := 0; i < 3; i++ {
		if _, err := r.d.HandleCommand(context.Background(), mqtt.Command{Name: mqtt.CmdClassify}); err != nil {
			t.Fatalf("classify %d: %v", i, err)
		}
	}
	if _, err := r.d.HandleCommand(context.Background(), mqtt.Command{Name: mqtt.CmdSnapshot, Camera: "bench1"}); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	mqtttest.WaitFor(t, 10*time.Second, "the thumbnail", func() bool { return len(sub.On("leafwatch/rig/bench1/thumbnail")) > 0 })
	if n := len(sub.On("leafwatch/rig/bench1/thumbnail")[0]); n > r.cfg.MQTT.ThumbnailMaxBytes || n < 1000 {
		t.Errorf("thumbnail of %d bytes, cap %d", n, r.cfg.MQTT.ThumbnailMaxBytes)
	}
	if len(r.d.cams[0].snapshotJPEG()) <= r.cfg.MQTT.ThumbnailMaxBytes {
		t.Logf("note: the snapshot (%d bytes) fit without shrinking", len(r.d.cams[0].snapshotJPEG()))
	}
}

// TestNoCredentialsAnywhere: a password in a camera URI is in no log line,
// status page or readiness answer.
func TestNoCredentialsAnywhere(t *testing.T) {
	r := newRig(t, rigOptions{source: "http://viewer:s3cret-pw@127.0.0.1:1/video.mjpg?open_timeout=1s"})
	mqtttest.WaitFor(t, 10*time.Second, "a failed camera connection", func() bool { return r.d.cams[0].src.Status().ConnectFailures > 0 })
	_, ready := r.get(t, "/readyz")
	_, page := r.get(t, "/")
	for what, text := range map[string]string{"readyz": ready, "status page": page, "logs": r.logs.String()} {
		if strings.Contains(text, "s3cret-pw") {
			t.Errorf("%s shows the camera password", what)
		}
	}
	if !strings.Contains(ready, "viewer:xxxxx@") {
		t.Errorf("readyz does not show the redacted source: %s", ready)
	}
}

// TestHTTPAuthentication: with a token file, everything but /healthz needs
// the token; a server reachable from the network without auth is warned
// about.
func TestHTTPAuthentication(t *testing.T) {
	tok := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tok, []byte("correct-horse-battery-staple\n"), 0o600)
	r := newRig(t, rigOptions{yaml: "http_auth: {token_file: " + tok + "}\n"})
	if code, _ := r.get(t, "/healthz"); code != 200 {
		t.Errorf("/healthz without a token: %d", code)
	}
	for _, p := range []string{"/readyz", "/metrics", "/", "/snapshot/bench1"} {
		if code, _ := r.get(t, p); code != 401 {
			t.Errorf("%s without a token: %d, want 401", p, code)
		}
		if code, _ := r.get(t, p, "Authorization", "Bearer wrong-token-wrong-token"); code != 401 {
			t.Errorf("%s with a wrong token: %d", p, code)
		}
	}
	if code, _ := r.get(t, "/metrics", "Authorization", "Bearer correct-horse-battery-staple"); code != 200 {
		t.Errorf("/metrics with the token: %d", code)
	}
	short := filepath.Join(t.TempDir(), "short")
	os.WriteFile(short, []byte("abc"), 0o600)
	cfg := r.cfg
	cfg.HTTPAuth = HTTPAuth{TokenFile: short}
	if _, err := New(cfg, quietLog()); err == nil || !strings.Contains(err.Error(), "at least 16") {
		t.Errorf("a 3-character token: %v", err)
	}
}

// TestOpenHTTPWarns: listening beyond loopback without auth is logged.
func TestOpenHTTPWarns(t *testing.T) {
	r := newRig(t, rigOptions{})
	r.stop(t)
	r.cfg.Listen = "0.0.0.0:" + strings.Split(freeAddr(t), ":")[1]
	r.http = "127.0.0.1:" + strings.Split(r.cfg.Listen, ":")[1]
	r.start(t)
	if !strings.Contains(r.logs.String(), "without authentication") {
		t.Error("no warning for an open HTTP server")
	}
}

// TestReloadBookkeeping: a new class set is announced loudly (log, the
// retained model topic, discovery again), a refused reload shows in
// /readyz until a good one clears it, and reloads are rate limited.
func TestReloadBookkeeping(t *testing.T) {
	r := newRig(t, rigOptions{yaml: ""})
	sub := mqtttest.NewSubscriber(t, r.broker, "model-sub", true, "leafwatch/rig/model", "homeassistant/sensor/rig/bench1_label/config")
	mqtttest.WaitFor(t, 10*time.Second, "the model topic", func() bool { return len(sub.On("leafwatch/rig/model")) > 0 })
	discoveryBefore := len(sub.On("homeassistant/sensor/rig/bench1_label/config"))

	os.WriteFile(r.ckpt, []byte("broken"), 0o644)
	if err := r.d.Reload("test"); err == nil {
		t.Fatal("a broken checkpoint was accepted")
	}
	if _, ready := r.get(t, "/readyz"); !strings.Contains(ready, "last_reload_error") {
		t.Errorf("readyz does not show the refused reload: %s", ready)
	}
	modelWithLabels(t, r.ckpt, []string{"Apple___Apple_scab", "Apple___healthy", "Grape___Black_rot"})
	if err := r.d.Reload("test"); err != nil {
		t.Fatal(err)
	}
	if _, ready := r.get(t, "/readyz"); strings.Contains(ready, "last_reload_error") {
		t.Errorf("readyz still shows the old reload error after a good reload: %s", ready)
	}
	if !strings.Contains(r.logs.String(), "CLASS SET CHANGED") {
		t.Error("the new class set was not logged")
	}
	mqtttest.WaitFor(t, 10*time.Second, "the new model info", func() bool {
		m := sub.On("leafwatch/rig/model")
		var info mqtt.ModelInfo
		json.Unmarshal([]byte(m[len(m)-1]), &info)
		return info.LabelsChanged && len(info.Labels) == 3
	})
	mqtttest.WaitFor(t, 10*time.Second, "discovery republished", func() bool {
		return len(sub.On("homeassistant/sensor/rig/bench1_label/config")) > discoveryBefore
	})

	// Rate limit: three reloads asked at once with a 1 s minimum interval
	// make two loads (one now, one for the rest), spaced by the interval.
	// Reload reads the interval under reloads.mu; the file watcher may be
	// reloading at this moment.
	r.d.reloads.mu.Lock()
	r.d.cfg.ReloadMinInterval = time.Second
	r.d.reloads.mu.Unlock()
	okBefore := counter(t, r, "leafwatch_model_reloads_total")
	start := time.Now()
	errs := make(chan error, 3)
	for i := 0; i < 3; i++ {
		go func() { errs <- r.d.Reload("burst") }()
	}
	for i := 0; i < 3; i++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := counter(t, r, "leafwatch_model_reloads_total") - okBefore; n > 2 {
		t.Errorf("%v reloads for a burst of 3 requests, want at most 2", n)
	}
	// The interval holds between the two loads (a lower bound: no
	// upper bound on time here, CI machines stall).
	if n := counter(t, r, "leafwatch_model_reloads_total") - okBefore; n == 2 {
		if took := time.Since(start); took < time.Second-50*time.Millisecond {
			t.Errorf("two reloads in %v, less than reload_min_interval (1s) apart", took)
		}
	}
}

// counter reads a counter from /metrics.
func counter(t *testing.T, r *testRig, name string) float64 {
	t.Helper()
	_, body := r.get(t, "/metrics")
	m := regexp.MustCompile(`(?m)^` + name + ` ([0-9.e+]+)$`).FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no %s in the metrics", name)
	}
	var v float64
	fmt.Sscan(m[1], &v)
	return v
}

// TestOutboxFailureIsVisible: when the outbox cannot be written, alerts
// still reach the broker and /readyz and the metrics say what is wrong.
func TestOutboxFailureIsVisible(t *testing.T) {
	r := newRig(t, rigOptions{class: 0}) // Late blight: alerts come
	sub := mqtttest.NewSubscriber(t, r.broker, "ob-sub", true, "leafwatch/rig/bench1/alert")
	outbox := filepath.Join(r.cfg.StateDir, "outbox")
	os.RemoveAll(outbox)
	os.WriteFile(outbox, []byte("the disk broke"), 0o600)
	// A model swap to healthy ends the alert: a durable message to write.
	writeConstantModel(t, r.ckpt, 3)
	if err := r.d.Reload("test"); err != nil {
		t.Fatal(err)
	}
	mqtttest.WaitFor(t, 20*time.Second, "the end of the alert", func() bool {
		for _, s := range sub.On("leafwatch/rig/bench1/alert") {
			if strings.Contains(s, `"phase":"end"`) {
				return true
			}
		}
		return false
	})
	_, ready := r.get(t, "/readyz")
	if !strings.Contains(ready, "outbox_error") {
		t.Errorf("readyz: %s", ready)
	}
	if counter(t, r, "leafwatch_outbox_write_failures_total") == 0 {
		t.Error("no outbox write failure counted")
	}
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
