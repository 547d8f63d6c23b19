package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"gocv.io/x/gocv"

	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/mqtt"
)

func freeAddr(t testing.TB) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// TestDaemonEndToEnd runs the whole pipeline in-process with real parts: a
// video file through OpenCV, the CPU engine, the embedded broker and a paho
// subscriber. It checks states arrive, a corrupt checkpoint pushed for
// reload is refused while the old model keeps serving, and shutdown
// publishes offline.
func TestDaemonEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("full AlexNet in -short mode")
	}
	dir := t.TempDir()
	m, err := model.NewRandom(model.TorchVision, 4, 1)
	if err != nil {
		t.Fatal(err)
	}
	m.Meta.Labels = []string{"Tomato___Late_blight", "Tomato___Leaf_Mold", "Tomato___Target_Spot", "Tomato___healthy"}
	ckpt := filepath.Join(dir, "model.safetensors")
	if err := m.Save(ckpt); err != nil {
		t.Fatal(err)
	}
	video := filepath.Join(dir, "bench.avi")
	vw, err := gocv.VideoWriterFile(video, "MJPG", 10, 320, 240, true)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		f := gocv.NewMatWithSizeFromScalar(gocv.NewScalar(40, float64(100+5*i), 60, 0), 240, 320, gocv.MatTypeCV8UC3)
		vw.Write(f)
		f.Close()
	}
	vw.Close()

	brokerAddr, httpAddr := freeAddr(t), freeAddr(t)
	yaml := fmt.Sprintf("device: e2e\nmodel: %s\nstate_dir: %s\nlisten: %s\nbroker: embedded\nembedded_broker: {address: %s}\n"+
		"cameras:\n  - name: bench1\n    source: file://%s?loop=true\n    interval: 200ms\n    decision: {threshold: 0.01, k: 1, n: 1}\n",
		ckpt, filepath.Join(dir, "state"), httpAddr, brokerAddr, video)
	cfg, err := ParseConfig("e2e.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	d, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()

	var mu sync.Mutex
	got := map[string][]string{}
	waitFor := func(what string, f func() bool) {
		t.Helper()
		end := time.Now().Add(20 * time.Second)
		for time.Now().Before(end) {
			mu.Lock()
			ok := f()
			mu.Unlock()
			if ok {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Fatalf("timed out waiting for %s", what)
	}
	time.Sleep(300 * time.Millisecond)
	sub := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + brokerAddr).SetClientID("e2e-sub"))
	if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber: %v", tok.Error())
	}
	defer sub.Disconnect(100)
	sub.Subscribe("leafwatch/e2e/#", 1, func(_ paho.Client, msg paho.Message) {
		mu.Lock()
		got[msg.Topic()] = append(got[msg.Topic()], string(msg.Payload()))
		mu.Unlock()
	}).Wait()

	waitFor("3 classifications", func() bool { return len(got["leafwatch/e2e/bench1/state"]) >= 3 })
	mu.Lock()
	var st mqtt.Classification
	json.Unmarshal([]byte(got["leafwatch/e2e/bench1/state"][0]), &st)
	mu.Unlock()
	if st.Model != m.Meta.Version || len(st.Top) != 3 || !strings.HasPrefix(st.Label, "Tomato___") {
		t.Fatalf("state %+v", st)
	}
	resp, err := http.Get("http://" + httpAddr + "/readyz")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("readyz: %v %v", err, resp)
	}
	resp.Body.Close()

	// A corrupt checkpoint pushed for reload: refused, old model serves.
	os.WriteFile(ckpt, []byte("definitely not a checkpoint"), 0o644)
	if err := d.Reload("test"); err == nil {
		t.Fatal("corrupt checkpoint accepted")
	}
	before := len(got["leafwatch/e2e/bench1/state"])
	waitFor("classifications after the failed reload", func() bool { return len(got["leafwatch/e2e/bench1/state"]) >= before+2 })
	if v := d.engine().Model().Meta.Version; v != m.Meta.Version {
		t.Fatalf("model version %s after a refused reload", v)
	}
	resp, _ = http.Get("http://" + httpAddr + "/metrics")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// The file watcher may also have tried the corrupt file: at least one.
	if !regexp.MustCompile(`leafwatch_model_reload_failures_total [1-9]`).Match(body) || !strings.Contains(string(body), "leafwatch_frames_classified_total") {
		t.Errorf("metrics lack the reload failure or frame counters:\n%s", body)
	}
	resp, _ = http.Get("http://" + httpAddr + "/")
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(page), "bench1") || !strings.Contains(string(page), "/snapshot/bench1") {
		t.Errorf("status page lacks the camera")
	}

	start := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("shutdown took more than 10 s")
	}
	t.Logf("shutdown in %v", time.Since(start))
}
