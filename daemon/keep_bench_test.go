package daemon

import (
	"context"
	"fmt"
	"image"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"gocv.io/x/gocv"

	"github.com/leafwatch/leafwatch/daemon/samples"
	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/tools/finetune/train"
)

// leafMosaics writes n 1920×1080 frames tiled with synthetic leaves (as a
// camera over a bench sees many leaves), each frame a different mix.
func leafMosaics(b testing.TB, dir string, n int) {
	b.Helper()
	synth := filepath.Join(b.TempDir(), "synth")
	if err := train.WriteSynth(synth, model.PlantVillageLabels()[:8], 6, 5); err != nil {
		b.Fatal(err)
	}
	leaves, _ := filepath.Glob(filepath.Join(synth, "*", "*.jpg"))
	sort.Strings(leaves)
	os.MkdirAll(dir, 0o755)
	for f := 0; f < n; f++ {
		frame := gocv.NewMatWithSizeFromScalar(gocv.NewScalar(40, 70, 90, 0), 1080, 1920, gocv.MatTypeCV8UC3)
		for i := 0; i < 40; i++ {
			leaf := gocv.IMRead(leaves[(i*7+f*13)%len(leaves)], gocv.IMReadColor)
			x, y := (i%8)*240, (i/8)*216
			dst := frame.Region(image.Rect(x, y, x+240, y+216))
			gocv.Resize(leaf, &dst, image.Point{240, 216}, 0, 0, gocv.InterpolationArea)
			dst.Close()
			leaf.Close()
		}
		gocv.IMWrite(filepath.Join(dir, fmt.Sprintf("%02d.jpg", f)), frame)
		frame.Close()
	}
}

// BenchmarkKeepOverhead: the sample loop of one camera (1920×1080 frames,
// a 2×3 grid and the whole frame: 7 regions through AlexNet, the
// decision, the MQTT state), a sample every 300 ms, with keeping off and
// on, alternating in one process, in ms per sample; the keeper writes in
// the background on the same two cores, between samples. "defaults": the shipped keep settings (the hourly cap
// soon limits what is written); "uncapped": every sample keeps 3 regions
// and its frame (max_per_hour 3600) — the most the writer ever does per
// sample. Every region is below the threshold, so the rules fire on every
// frame. Also reports the disk a kept sample takes and what one sample a
// minute costs per camera per day.
func BenchmarkKeepOverhead(b *testing.B) {
	for _, c := range []struct {
		name string
		keep string
	}{{"defaults", "{baseline_every: 1h}"}, {"uncapped", "{max_per_hour: 3600}"}} {
		b.Run(c.name, func(b *testing.B) { benchKeep(b, c.keep) })
	}
}

func benchKeep(b *testing.B, keep string) {
	dir := b.TempDir()
	imgs := filepath.Join(dir, "frames")
	leafMosaics(b, imgs, 8)
	m, _ := model.NewRandom(model.TorchVision, 38, 3)
	ckpt := filepath.Join(dir, "model.safetensors")
	m.Save(ckpt)
	cfgText := fmt.Sprintf(`device: bench
model: %s
state_dir: %s
listen: %s
broker: embedded
embedded_broker: {address: %s}
stats_interval: 0s
cameras:
  - name: bench1
    source: folder://%s?fps=20&loop=true
    interval: 24h
    tiling: {rows: 2, cols: 3, overlap: 0.2, full: true}
    decision: {threshold: 0.9999}
    keep: %s
`, ckpt, filepath.Join(dir, "state"), freeAddr(b), freeAddr(b), imgs, keep)
	cfg, err := ParseConfig("bench.yaml", []byte(cfgText))
	if err != nil {
		b.Fatal(err)
	}
	d, err := New(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for !d.ready.Load() || d.cams[0].src.Status().Frames == 0 {
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // the loop's first Mat exists
	c := d.cams[0]
	// A sample every 300 ms (a camera's interval; the default is 5 s): the
	// time of each sample is measured, the rest of the interval is idle.
	run := func(keepOn bool, n int) time.Duration {
		c.cfg.Keep.Enabled = keepOn
		var total time.Duration
		for range n {
			start := time.Now()
			if err := c.sample(ctx, true); err != nil {
				b.Fatal(err)
			}
			took := time.Since(start)
			total += took
			time.Sleep(300*time.Millisecond - took)
		}
		return total / time.Duration(n)
	}
	run(false, 3) // warm
	b.ResetTimer()
	var off, on []float64
	for range b.N {
		for round := 0; round < 6; round++ {
			off = append(off, float64(run(false, 4))/1e6)
			on = append(on, float64(run(true, 4))/1e6)
		}
	}
	b.StopTimer()
	mo, mn := median(off), median(on)
	b.ReportMetric(mo, "ms/sample_off")
	b.ReportMetric(mn, "ms/sample_on")
	b.ReportMetric(mn/mo, "ratio_on/off")
	// Wait for the writer, then size what was kept.
	time.Sleep(2 * time.Second)
	sum, err := d.store.Summarise(ctx)
	list, err2 := d.store.List(ctx, samples.Filter{})
	if err != nil || err2 != nil || len(list) == 0 {
		return
	}
	var regionBytes int64
	frames := map[string]bool{}
	for _, s := range list {
		regionBytes += s.Bytes
		frames[s.FrameID] = true
	}
	region := float64(regionBytes) / float64(len(list))
	frame := float64(sum.Bytes-regionBytes) / float64(len(frames))
	b.ReportMetric(float64(len(list)), "samples_kept")
	b.ReportMetric(region/1024, "kB/region")
	b.ReportMetric(frame/1024, "kB/frame_copy")
	// One sample a minute, each with its own frame copy: 1,440 a day.
	b.ReportMetric(1440*(region+frame)/(1<<20), "MB/camera/day_at_1/min")
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}
