//go:build matprofile

package vision

import (
	"context"
	"image"
	"strings"
	"testing"
	"time"

	"gocv.io/x/gocv"
)

// TestNoLeakedMats runs frames, reconnect cycles, preprocessing and
// snapshots, closes everything, and checks that every Mat was freed.
// Run with: go test -tags matprofile -run NoLeakedMats ./vision/
func TestNoLeakedMats(t *testing.T) {
	start := gocv.MatProfile.Count()

	// Many frames from a looping file, sampled like the daemon does.
	p := writeVideo(t, 8, 200)
	c, err := Open("file://"+p+"?loop=true&fps=200", quiet)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go c.Run(ctx)
	frame := gocv.NewMat()
	if gocv.MatProfile.Count() <= start {
		t.Fatalf("the Mat profile is not counting (%d → %d): build with -tags matprofile", start, gocv.MatProfile.Count())
	}
	pp, _ := NewPreprocessor(imagenet, Tiling{Rows: 2, Cols: 2, Overlap: 0.2, Full: true})
	waitUntil(t, 10*time.Second, "200 frames", func() bool {
		if seq, _ := c.Latest(&frame); seq > 0 {
			pp.Run(frame)
		}
		return c.Status().Frames >= 200
	})
	jpeg, err := EncodeSnapshot(frame, Overlay{Camera: "c", Label: "x", Tiles: []TileMark{{Box: image.Rect(0, 0, 10, 10)}}}, 100, 80)
	if err != nil || len(jpeg) == 0 {
		t.Fatal(err)
	}
	cancel()
	c.Close()

	// Reconnect cycles against an MJPEG server that goes away and returns.
	s := startMJPEG(t, "127.0.0.1:0")
	hc, _ := Open("http://"+s.addr+"/?read_timeout=500ms", quiet)
	hc.MinBackoff, hc.MaxBackoff = 20*time.Millisecond, 100*time.Millisecond
	hctx, hcancel := context.WithCancel(context.Background())
	go hc.Run(hctx)
	for cycle := 0; cycle < 3; cycle++ {
		waitUntil(t, 10*time.Second, "frames", func() bool { return hc.Status().State == StateConnected && hc.Status().Frames > 0 })
		s.stop()
		waitUntil(t, 10*time.Second, "reconnecting", func() bool { return hc.Status().State == StateReconnecting })
		s = startMJPEG(t, s.addr)
	}
	waitUntil(t, 10*time.Second, "frames after the last restart", func() bool { return hc.Status().State == StateConnected })
	hcancel()
	hc.Close()
	s.stop()

	pp.Close()
	frame.Close()
	if n := gocv.MatProfile.Count(); n != start {
		var b strings.Builder
		gocv.MatProfile.WriteTo(&b, 1)
		t.Fatalf("%d Mats leaked (profile count %d, was %d)\n%s", n-start, n, start, b.String())
	}
	if hc.Status().Reconnects < 3 {
		t.Errorf("only %d reconnects", hc.Status().Reconnects)
	}
}
