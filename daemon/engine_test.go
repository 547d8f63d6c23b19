package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	paho "github.com/eclipse/paho.mqtt.golang"
	"gocv.io/x/gocv"

	"github.com/leafwatch/leafwatch/internal/testlog"
	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/model/cpu"
	"github.com/leafwatch/leafwatch/mqtt"
)

// failingEngine stands in for a CUDA engine (no GPU here) that loses its
// context after a few inferences: from then on every call fails with
// model.ErrEngineFailed, as model/gpu's engine does after a sticky error.
type failingEngine struct {
	inner  model.Engine
	model  *model.Model // what Model returns, when not inner's (a CUDA engine's host model)
	after  int32
	calls  atomic.Int32
	closed atomic.Bool
}

func (f *failingEngine) Engine() string { return "cuda/fake" }
func (f *failingEngine) Model() *model.Model {
	if f.model != nil {
		return f.model
	}
	return f.inner.Model()
}
func (f *failingEngine) Close() error { f.closed.Store(true); return nil }
func (f *failingEngine) Probabilities(ctx context.Context, x []float32, n int, p []float32) error {
	if f.calls.Add(1) > f.after {
		return fmt.Errorf("CUDA forward: %w: CUDA context lost (IllegalAddress)", model.ErrEngineFailed)
	}
	return f.inner.Probabilities(ctx, x, n, p)
}
func (f *failingEngine) Classify(ctx context.Context, x []float32, n, k int) ([]model.Prediction, error) {
	return model.ClassifyWith(ctx, f, x, n, k)
}

func writeTestVideo(t *testing.T, path string, frames int) {
	t.Helper()
	vw, err := gocv.VideoWriterFile(path, "MJPG", 10, 320, 240, true)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < frames; i++ {
		f := gocv.NewMatWithSizeFromScalar(gocv.NewScalar(40, float64(100+5*i), 60, 0), 240, 320, gocv.MatTypeCV8UC3)
		vw.Write(f)
		f.Close()
	}
	vw.Close()
}

// TestEngineFailureFallsBackToCPU: when the engine reports it has failed,
// the daemon switches to the CPU engine, keeps publishing, and says so in
// the log, the metrics, /readyz and the stats message — whether the failed
// engine's model kept its weights or (as leafwatchd's CUDA engine, which
// holds them on the device) released them, when the fallback loads the
// checkpoint again.
func TestEngineFailureFallsBackToCPU(t *testing.T) {
	if testing.Short() {
		t.Skip("full AlexNet in -short mode")
	}
	for _, released := range []bool{false, true} {
		t.Run(map[bool]string{false: "whole", true: "released"}[released], func(t *testing.T) { testEngineFallback(t, released) })
	}
}

func testEngineFallback(t *testing.T, released bool) {
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
	writeTestVideo(t, video, 20)
	brokerAddr, httpAddr := freeAddr(t), freeAddr(t)
	yaml := fmt.Sprintf("device: fb\nmodel: %s\nstate_dir: %s\nlisten: %s\nbroker: embedded\nembedded_broker: {address: %s}\nstats_interval: 1s\n"+
		"cameras:\n  - name: bench1\n    source: file://%s?loop=true\n    interval: 200ms\n    decision: {threshold: 0.01, k: 1, n: 1}\n",
		ckpt, filepath.Join(dir, "state"), httpAddr, brokerAddr, video)
	cfg, err := ParseConfig("fb.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	var logs testlog.Buffer
	d, err := New(cfg, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	// Replace the engine New chose with one that fails after 3 samples
	// (the probe inference of a reload counts as one). It stands in for a
	// CUDA engine: inference on its own copy of the weights, and a host
	// model that is whole or released (the daemon's own CPU engine
	// released part of its model, which the fallback cannot build on).
	whole, err := model.Load(ckpt)
	if err != nil {
		t.Fatal(err)
	}
	fe := &failingEngine{inner: cpu.NewClassifier(whole, model.Options{}), after: 3}
	if released {
		if fe.model, err = model.Load(ckpt); err != nil {
			t.Fatal(err)
		}
		fe.model.ReleaseAll()
	}
	d.serving.Store(newEngineBox(fe))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()

	var mu sync.Mutex
	var states, stats []string
	time.Sleep(300 * time.Millisecond)
	sub := paho.NewClient(paho.NewClientOptions().AddBroker("tcp://" + brokerAddr).SetClientID("fb-sub"))
	if tok := sub.Connect(); !tok.WaitTimeout(10*time.Second) || tok.Error() != nil {
		t.Fatalf("subscriber: %v", tok.Error())
	}
	defer sub.Disconnect(100)
	sub.Subscribe("leafwatch/fb/#", 1, func(_ paho.Client, msg paho.Message) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case strings.HasSuffix(msg.Topic(), "/state"):
			states = append(states, string(msg.Payload()))
		case strings.HasSuffix(msg.Topic(), "/stats"):
			stats = append(stats, string(msg.Payload()))
		}
	}).Wait()
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(states)
		var last mqtt.Stats
		if len(stats) > 0 {
			json.Unmarshal([]byte(stats[len(stats)-1]), &last)
		}
		mu.Unlock()
		if fe.calls.Load() > fe.after && n >= 3 && strings.HasPrefix(last.Engine, "cpu/") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no CPU fallback seen: %d engine calls, %d states, last stats engine %q\n%s", fe.calls.Load(), n, last.Engine, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !fe.closed.Load() {
		t.Error("the failed engine was not closed")
	}
	resp, err := http.Get("http://" + httpAddr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	var rd readiness
	json.NewDecoder(resp.Body).Decode(&rd)
	resp.Body.Close()
	if !strings.HasPrefix(rd.Engine, "cpu/") || !strings.Contains(rd.EngineFallback, "cuda/fake failed") {
		t.Errorf("readyz: engine %q, fallback %q", rd.Engine, rd.EngineFallback)
	}
	resp, _ = http.Get("http://" + httpAddr + "/metrics")
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "leafwatch_engine_fallbacks_total 1") || !strings.Contains(string(body), `leafwatch_engine_info{engine="cpu/`) {
		t.Errorf("metrics lack the fallback")
	}
	if !strings.Contains(logs.String(), "falling back to the CPU") {
		t.Errorf("the fallback is not logged")
	}
	// A reload tries the configured engine again and clears the note.
	if err := d.Reload("test"); err != nil {
		t.Fatal(err)
	}
	if f, _ := d.fallback.Load().(string); f != "" {
		t.Errorf("fallback note kept after a reload: %q", f)
	}
}

// TestFallbackModel: the CPU fallback serves a whole model as it is, loads
// a released one again from its checkpoint, and refuses (with a reason) a
// checkpoint replaced since, or one it cannot read.
func TestFallbackModel(t *testing.T) {
	dir := t.TempDir()
	ckpt := filepath.Join(dir, "model.safetensors")
	save := func(seed uint64) {
		t.Helper()
		m, err := model.NewRandom(model.TorchVision, 3, seed)
		if err != nil {
			t.Fatal(err)
		}
		if err := m.Save(ckpt); err != nil {
			t.Fatal(err)
		}
	}
	save(1)
	served, err := model.Load(ckpt)
	if err != nil {
		t.Fatal(err)
	}
	d := &Daemon{cfg: Config{Model: ckpt}}
	if m, err := d.fallbackModel(served); err != nil || m != served {
		t.Fatalf("whole model: %p, %v; want the served model itself", m, err)
	}
	served.ReleaseAll()
	m, err := d.fallbackModel(served)
	if err != nil || m == served || m.Whole("") != nil || m.Meta.Version != served.Meta.Version {
		t.Fatalf("released model: %v; want the checkpoint loaded again", err)
	}
	save(2)
	if _, err := d.fallbackModel(served); err == nil || !strings.Contains(err.Error(), "the reload will serve it") {
		t.Errorf("replaced checkpoint: %v", err)
	}
	os.Remove(ckpt)
	if _, err := d.fallbackModel(served); err == nil || !strings.Contains(err.Error(), "loading them again") {
		t.Errorf("missing checkpoint: %v", err)
	}
}

// TestSamplesRecordThePrecisionComputedIn: a kept sample's record names
// the precision its engine computed in — what the engine says (the CPU
// engine its FC precision; the CUDA engine's Precision is tested in
// model/gpu), and fp32 for an engine that does not say, whatever the
// config's precision is.
func TestSamplesRecordThePrecisionComputedIn(t *testing.T) {
	m, err := model.NewRandom(model.TorchVision, 3, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		e    model.Engine
		want string
	}{
		{"cpu, the default", cpu.NewClassifier(m, model.Options{Precision: model.DefaultPrecision}), "fp16"},
		{"cpu, fp32", cpu.NewClassifier(m, model.Options{Precision: model.FP32}), "fp32"},
		{"cpu, int8", cpu.NewClassifier(m, model.Options{Precision: model.INT8}), "int8"},
		{"another engine", &failingEngine{model: m}, "fp32"},
	} {
		if got := precisionOf(tc.e); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
		tc.e.Close()
	}
	cfg, err := ParseConfig("x.yaml", []byte("cameras:\n  - name: a\n    source: /tmp\n"))
	if err != nil || cfg.Precision != string(model.DefaultPrecision) || model.DefaultPrecision != model.FP16 {
		t.Errorf("a config without precision: %q (%v), want fp16", cfg.Precision, err)
	}
}
