package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestShutdownWithHungCameras: four cameras whose reads hang inside
// OpenCV (a pipeline that delivers a frame every 30 s) still let the
// daemon stop within 8 s: they are closed together, not 3 s one after
// another.
func TestShutdownWithHungCameras(t *testing.T) {
	if testing.Short() {
		t.Skip("full AlexNet in -short mode")
	}
	dir := t.TempDir()
	ckpt := filepath.Join(dir, "model.safetensors")
	writeConstantModel(t, ckpt, 0)
	var cams strings.Builder
	for i := 0; i < 4; i++ {
		// A pipe with one frame in it, then silence: OpenCV opens the
		// pipeline and reads that frame, and the next read blocks for good.
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { w.Close(); r.Close() })
		w.Write(make([]byte, 64*48*3))
		fmt.Fprintf(&cams, "  - name: hung%d\n    source: gst://fdsrc fd=%d ! rawvideoparse width=64 height=48 format=bgr framerate=5/1 ! videoconvert ! video/x-raw,format=BGR ! appsink drop=true max-buffers=1\n    interval: 1s\n", i, r.Fd())
	}
	yaml := fmt.Sprintf("device: hang\nmodel: %s\nstate_dir: %s\nlisten: %s\nbroker: embedded\nembedded_broker: {address: %s}\ncameras:\n%s",
		ckpt, filepath.Join(dir, "state"), freeAddr(t), freeAddr(t), cams.String())
	cfg, err := ParseConfig("hang.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	d, err := New(cfg, quietLog())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	for _, c := range d.cams {
		waitFor(t, 20*time.Second, c.cfg.Name+"'s one frame", func() bool { return c.src.Status().Frames > 0 })
	}
	time.Sleep(500 * time.Millisecond) // every camera now blocks in its next read
	start := time.Now()
	cancel()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("no shutdown within 20 s")
	}
	took := time.Since(start)
	t.Logf("shutdown with 4 hung cameras in %v", took.Round(time.Millisecond))
	if took > 8*time.Second {
		t.Errorf("shutdown took %v", took)
	}
}

func waitFor(t *testing.T, d time.Duration, what string, f func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for time.Now().Before(end) {
		if f() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}
