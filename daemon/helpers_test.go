package daemon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"gocv.io/x/gocv"

	"github.com/leafwatch/leafwatch/internal/testlog"
	"github.com/leafwatch/leafwatch/model"
)

// testRig is an in-process leafwatchd with the embedded broker, a model
// that always answers one class, and a looping test video.
type testRig struct {
	d         *Daemon
	cfg       Config
	dir       string
	ckpt      string
	broker    string // tcp:// URL
	http      string // host:port
	logs      *testlog.Buffer
	cancel    context.CancelFunc
	done      chan error
	stopped   bool
	cameraURI string
}

// rigOptions shape a rig; yaml is appended to the generated config.
type rigOptions struct {
	class  int    // the class the model answers (processLabels)
	yaml   string // extra top-level config
	camera string // camera block fields beyond name and source (indented 4)
	source string // camera source; default a looping video
	broker string // a broker URL instead of the embedded broker
	before func(stateDir string)
}

func newRig(t *testing.T, o rigOptions) *testRig {
	t.Helper()
	if testing.Short() {
		t.Skip("full AlexNet in -short mode")
	}
	r := &testRig{dir: t.TempDir(), logs: &testlog.Buffer{}}
	r.ckpt = filepath.Join(r.dir, "model.safetensors")
	writeConstantModel(t, r.ckpt, o.class)
	if o.source == "" {
		video := filepath.Join(r.dir, "bench.avi")
		writeTestVideo(t, video, 10)
		o.source = "file://" + video + "?loop=true"
	}
	if o.camera == "" {
		o.camera = "    interval: 200ms\n    decision: {threshold: 0.5, k: 2, n: 3, cooldown: 1ms}\n"
	}
	// The ports come from freeAddr and another test process may take one
	// before the daemon binds it: such a start is retried on new ports.
	r.stopped = true
	t.Cleanup(func() { r.stop(t) })
	for attempt := 1; ; attempt++ {
		err := r.configure(t, o)
		if err == nil {
			err = r.tryStart(t)
		}
		if err == nil {
			break
		}
		if attempt == 3 || !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatal(err)
		}
		t.Logf("retrying on other ports: %v", err)
	}
	return r
}

// configure writes the rig's config on fresh ports.
func (r *testRig) configure(t *testing.T, o rigOptions) error {
	t.Helper()
	brokerAddr, httpAddr := freeAddr(t), freeAddr(t)
	r.broker, r.http, r.cameraURI = "tcp://"+brokerAddr, httpAddr, o.source
	brokerCfg := fmt.Sprintf("broker: embedded\nembedded_broker: {address: %s}\n", brokerAddr)
	if o.broker != "" {
		r.broker, brokerCfg = o.broker, "broker: "+o.broker+"\n"
	}
	yaml := fmt.Sprintf("device: rig\nmodel: %s\nstate_dir: %s\nlisten: %s\n%sreload_min_interval: 0s\n%s"+
		"cameras:\n  - name: bench1\n    source: %s\n%s", r.ckpt, filepath.Join(r.dir, "state"), httpAddr, brokerCfg, o.yaml, o.source, o.camera)
	cfg, err := ParseConfig("rig.yaml", []byte(yaml))
	if err != nil {
		return err
	}
	r.cfg = cfg
	if o.before != nil {
		o.before(cfg.StateDir)
	}
	return nil
}

func (r *testRig) start(t *testing.T) {
	t.Helper()
	if err := r.tryStart(t); err != nil {
		t.Fatal(err)
	}
}

// tryStart starts the daemon and waits until it is ready and connected;
// a daemon that stops first returns its error.
func (r *testRig) tryStart(t *testing.T) error {
	t.Helper()
	d, err := New(r.cfg, slog.New(slog.NewTextHandler(r.logs, nil)))
	if err != nil {
		return err
	}
	r.d, r.stopped = d, false
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	r.cancel, r.done = cancel, done
	go func() { done <- d.Run(ctx) }()
	// ready is set (atomically) after the publisher exists.
	deadline := time.Now().Add(20 * time.Second)
	for !(d.ready.Load() && d.pub.Connected()) {
		select {
		case err := <-done:
			r.stopped = true
			cancel()
			if err == nil {
				err = errors.New("the daemon stopped before it was ready")
			}
			return fmt.Errorf("daemon start: %w", err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			log := r.logs.String()
			return fmt.Errorf("timed out after 20s waiting for the daemon to connect; end of its log:\n%s", log[max(0, len(log)-4000):])
		}
	}
	return nil
}

func (r *testRig) stop(t *testing.T) {
	t.Helper()
	if r.stopped {
		return
	}
	r.stopped = true
	r.cancel()
	select {
	case <-r.done:
	case <-time.After(15 * time.Second):
		t.Error("daemon did not stop within 15 s")
	}
}

// get fetches a path from the daemon's HTTP server.
func (r *testRig) get(t *testing.T, path string, header ...string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+r.http+path, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// modelWithLabels saves a constant model with other class names.
func modelWithLabels(t *testing.T, path string, labels []string) {
	t.Helper()
	m, err := model.NewRandom(model.TorchVision, len(labels), 1)
	if err != nil {
		t.Fatal(err)
	}
	m.Meta.Labels = labels
	if err := m.Save(path); err != nil {
		t.Fatal(err)
	}
}

// writeTestImages writes n w×h PNG images into dir.
func writeTestImages(t *testing.T, dir string, n, w, h int) {
	t.Helper()
	for i := 0; i < n; i++ {
		m := gocv.NewMatWithSizeFromScalar(gocv.NewScalar(40, float64(100+20*i), 60, 0), h, w, gocv.MatTypeCV8UC3)
		gocv.RandU(&m, gocv.NewScalar(0, 0, 0, 0), gocv.NewScalar(255, 255, 255, 0)) // noise: a large JPEG, as a real greenhouse frame is
		if !gocv.IMWrite(filepath.Join(dir, fmt.Sprintf("%02d.png", i)), m) {
			t.Fatal("cannot write a test image")
		}
		m.Close()
	}
}
