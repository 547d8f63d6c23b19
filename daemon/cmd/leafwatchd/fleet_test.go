package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/leafwatch/leafwatch/daemon/fleet"
	"github.com/leafwatch/leafwatch/internal/bundle"
	"github.com/leafwatch/leafwatch/internal/mqtttest"
)

// headerCheckpoint writes a checkpoint header (what announcing reads).
func headerCheckpoint(t *testing.T, path string) {
	t.Helper()
	hdr, _ := json.Marshal(map[string]any{"__metadata__": map[string]string{
		"format": "leafwatch-alexnet", "format_version": "1", "variant": "torchvision", "labels": `["a","b"]`,
		"input_size": "224", "resize": "256", "mean": "[0.485,0.456,0.406]", "std": "[0.229,0.224,0.225]",
		"created": "2026-12-01T00:00:00Z"}})
	var b bytes.Buffer
	binary.Write(&b, binary.LittleEndian, uint64(len(hdr)))
	b.Write(hdr)
	b.WriteString("weights")
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestFleetCommands: announce (refused unsigned, then signed), the
// retained announcement on the broker, status as a table, withdraw.
func TestFleetCommands(t *testing.T) {
	broker := mqtttest.StartMosquitto(t)
	dir := t.TempDir()
	ckpt := filepath.Join(dir, "best.safetensors")
	headerCheckpoint(t, ckpt)
	if _, err := bundle.WriteManifest(ckpt, "", nil); err != nil {
		t.Fatal(err)
	}
	var out, errs bytes.Buffer
	args := []string{"--broker", broker.URL(), "--model", ckpt, "--url", "https://models.example/best.safetensors", "--group", "canary"}
	if rc := cmdFleet(append([]string{"announce"}, args...), &out, &errs); rc == 0 || !strings.Contains(errs.String(), "not signed") {
		t.Errorf("unsigned announce: rc %d, %s", rc, errs.String())
	}
	_, key, err := bundle.GenerateKey(filepath.Join(dir, "release"), "")
	if err != nil {
		t.Fatal(err)
	}
	s, _ := bundle.LoadSigner(key, "")
	if _, err := bundle.SignCheckpoint(s, ckpt, "first"); err != nil {
		t.Fatal(err)
	}
	sub := mqtttest.NewSubscriber(t, broker.URL(), "watch", true, "leafwatch/fleet/#")
	out.Reset()
	errs.Reset()
	if rc := cmdFleet(append([]string{"announce"}, args...), &out, &errs); rc != 0 || !strings.Contains(out.String(), "group canary") {
		t.Fatalf("announce: rc %d, %s %s", rc, out.String(), errs.String())
	}
	mqtttest.WaitFor(t, 5*time.Second, "the announcement", func() bool { return len(sub.On("leafwatch/fleet/canary/model")) > 0 })
	a, ok, err := fleet.ParseAnnouncement([]byte(sub.On("leafwatch/fleet/canary/model")[0]))
	if err != nil || !ok || a.Signature == "" || !strings.HasPrefix(a.URL, "https://") {
		t.Errorf("announcement: %+v %v", a, err)
	}
	if _, err := a.Bundle(); err != nil {
		t.Error(err)
	}

	// Two devices' retained states; status prints both.
	pct := 40.0
	for dev, st := range map[string]fleet.State{
		"bench-a": {InstalledVersion: "aaaaaaaaaaaa", State: fleet.StateInstalled, Group: "canary", Acceptance: &fleet.Acceptance{Rule: "taken on 30 baseline samples"}},
		"bench-b": {InstalledVersion: "bbbbbbbbbbbb", OfferedVersion: a.Version, State: fleet.StateDownloading, Group: "canary", UpdatePercentage: &pct},
	} {
		publishRetained(t, broker.URL(), "leafwatch/"+dev+"/model/update", st.Marshal())
	}
	out.Reset()
	if rc := cmdFleet([]string{"status", "--broker", broker.URL(), "--wait", "500ms"}, &out, &errs); rc != 0 {
		t.Fatalf("status: %s", errs.String())
	}
	for _, want := range []string{"bench-a", "taken on 30 baseline samples", "bench-b", "40% downloaded", a.Version} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if rc := cmdFleet([]string{"withdraw", "--broker", broker.URL(), "--group", "canary"}, &out, &errs); rc != 0 {
		t.Fatal(errs.String())
	}
	mqtttest.WaitFor(t, 5*time.Second, "the withdrawal", func() bool {
		on := sub.On("leafwatch/fleet/canary/model")
		return len(on) > 1 && on[len(on)-1] == ""
	})
	if rc := cmdFleet([]string{"rollback", "--broker", broker.URL()}, &out, &errs); rc == 0 {
		t.Error("rollback without --device")
	}
}

func publishRetained(t *testing.T, broker, topic string, payload []byte) {
	t.Helper()
	env := fleetEnv{}
	env.cfg.Broker = broker
	if err := env.send(topic, payload, false); err != nil {
		t.Fatal(err)
	}
}
