package vision

import (
	"context"
	"fmt"
	"image"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gocv.io/x/gocv"
)

// randomFrame fills a w×h BGR frame with smooth random content (sums of
// sines), so bilinear interpolation is well-defined to compare against.
func randomFrame(w, h int, seed uint64) gocv.Mat {
	rng := rand.New(rand.NewPCG(seed, 1))
	data := make([]byte, w*h*3)
	var fx, fy, ph [3]float64
	for c := range fx {
		fx[c], fy[c], ph[c] = rng.Float64()*0.2, rng.Float64()*0.2, rng.Float64()*6
	}
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			for c := 0; c < 3; c++ {
				v := 127.5 + 120*math.Sin(fx[c]*float64(x)+fy[c]*float64(y)+ph[c])
				data[(y*w+x)*3+c] = byte(v)
			}
		}
	}
	m, _ := gocv.NewMatFromBytes(h, w, gocv.MatTypeCV8UC3, data)
	return m
}

// refPreprocess is the float64 reference of Prepare, written from the
// definitions: area averaging (each output pixel the mean of the source
// area it covers, fractional pixels weighted) when shrinking, OpenCV's
// half-pixel-centre bilinear when enlarging; crop, mirror, BGR→RGB,
// (v/255-mean)/std.
func refPreprocess(frame gocv.Mat, box image.Rectangle, p Preprocess, crop Crop) []float64 {
	w, h := box.Dx(), box.Dy()
	rw, rh := p.Geometry(w, h)
	s := p.InputSize
	x0, y0 := crop.X, crop.Y
	if x0 < 0 {
		x0 = (rw - s) / 2
	}
	if y0 < 0 {
		y0 = (rh - s) / 2
	}
	px := func(x, y, c int) float64 {
		x = min(max(x, 0), w-1)
		y = min(max(y, 0), h-1)
		return float64(frame.GetVecbAt(box.Min.Y+y, box.Min.X+x)[c])
	}
	// weights returns, for output index o of n outputs over a source of
	// length src, the source indices and weights that make it.
	area := rw < w && rh < h
	weights := func(o, n, src int) (idx []int, wt []float64) {
		scale := float64(src) / float64(n)
		if area {
			lo, hi := float64(o)*scale, float64(o+1)*scale
			for i := int(math.Floor(lo)); float64(i) < hi; i++ {
				ov := math.Min(hi, float64(i+1)) - math.Max(lo, float64(i))
				if ov > 1e-12 {
					idx, wt = append(idx, i), append(wt, ov/scale)
				}
			}
			return idx, wt
		}
		f := (float64(o)+0.5)*scale - 0.5
		i := int(math.Floor(f))
		a := f - float64(i)
		if f < 0 {
			i, a = 0, 0
		}
		return []int{i, i + 1}, []float64{1 - a, a}
	}
	out := make([]float64, 3*s*s)
	for y := 0; y < s; y++ {
		yi, yw := weights(y+y0, rh, h)
		for x := 0; x < s; x++ {
			sx := x + x0
			if crop.Mirror {
				sx = x0 + s - 1 - x
			}
			xi, xw := weights(sx, rw, w)
			for c := 0; c < 3; c++ {
				v := 0.0
				for a, iy := range yi {
					for b, ix := range xi {
						v += yw[a] * xw[b] * px(ix, iy, c)
					}
				}
				rgb := 2 - c
				out[rgb*s*s+y*s+x] = (v/255 - float64(p.Mean[rgb])) / float64(p.Std[rgb])
			}
		}
	}
	return out
}

var imagenet = Preprocess{InputSize: 224, Resize: 256, Mean: [3]float32{0.485, 0.456, 0.406}, Std: [3]float32{0.229, 0.224, 0.225}}

func TestPreprocessMatchesFloat64Reference(t *testing.T) {
	cases := []struct {
		name   string
		w, h   int
		p      Preprocess
		tiling Tiling
	}{
		{"crop-landscape", 640, 480, imagenet, Tiling{}},
		{"crop-portrait", 300, 500, imagenet, Tiling{}},
		{"whole-frame", 640, 360, Preprocess{InputSize: 227, Mean: [3]float32{0.48, 0.46, 0.41}, Std: [3]float32{1.0 / 255, 1.0 / 255, 1.0 / 255}}, Tiling{}},
		{"tiled", 800, 450, imagenet, Tiling{Rows: 2, Cols: 2, Overlap: 0.25, Full: true}},
		{"large-frame", 1920, 1080, imagenet, Tiling{}},
		{"enlarge", 160, 120, imagenet, Tiling{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			frame := randomFrame(tc.w, tc.h, 3)
			defer frame.Close()
			pp, err := NewPreprocessor(tc.p, tc.tiling)
			if err != nil {
				t.Fatal(err)
			}
			defer pp.Close()
			batch, boxes, err := pp.Run(frame)
			if err != nil {
				t.Fatal(err)
			}
			il := pp.ImageLen()
			if len(batch) != len(boxes)*il {
				t.Fatalf("batch of %d floats for %d boxes", len(batch), len(boxes))
			}
			level := 1 / 255.0 / float64(min(tc.p.Std[0], tc.p.Std[1], tc.p.Std[2]))
			for i, b := range boxes {
				want := refPreprocess(frame, b, tc.p, Centre)
				var worst, sum float64
				for j, v := range want {
					d := math.Abs(float64(batch[i*il+j]) - v)
					worst = max(worst, d)
					sum += d
				}
				// OpenCV resizes 8-bit images in fixed point and rounds to
				// 8 bits: allow about one intensity level.
				if worst > 1.5*level || sum/float64(len(want)) > 0.5*level {
					t.Errorf("box %v: max diff %.3g (%.2f levels), mean %.3g levels", b, worst, worst/level, sum/float64(len(want))/level)
				}
			}
		})
	}
}

// TestPrepareCropsAndMirrors: training's random crops and mirrors are
// Prepare's, checked against the reference.
func TestPrepareCropsAndMirrors(t *testing.T) {
	frame := randomFrame(500, 375, 4)
	defer frame.Close()
	sc := NewScratch()
	defer sc.Close()
	dst := make([]float32, 3*224*224)
	level := 1 / 255.0 / 0.225
	for _, crop := range []Crop{{X: 0, Y: 0}, {X: 117, Y: 32, Mirror: true}, {X: -1, Y: -1, Mirror: true}} {
		if err := Prepare(frame, image.Rect(0, 0, 500, 375), imagenet, crop, dst, sc); err != nil {
			t.Fatal(err)
		}
		want := refPreprocess(frame, image.Rect(0, 0, 500, 375), imagenet, crop)
		worst := 0.0
		for j, v := range want {
			worst = max(worst, math.Abs(float64(dst[j])-v))
		}
		if worst > 1.5*level {
			t.Errorf("crop %+v: max diff %.2f levels", crop, worst/level)
		}
	}
	if err := Prepare(frame, image.Rect(0, 0, 500, 375), imagenet, Crop{X: 200}, dst, sc); err == nil {
		t.Error("a crop outside the resized region was accepted")
	}
}

// TestAreaResizeKeepsSmallLesions measures why Prepare shrinks by area:
// dark lesions 2 px wide on a green 1920×1080 leaf, shrunk to 256 high (a
// factor of 4.2). A single bilinear step reads 2 of every 4.2 source pixels
// per axis: it shows a lesion at full strength or not at all, depending on
// where it falls. Area averaging shows every lesion, weaker.
func TestAreaResizeKeepsSmallLesions(t *testing.T) {
	const W, H, r = 1920, 1080, 1
	data := make([]byte, W*H*3)
	for i := 0; i < W*H; i++ {
		data[i*3], data[i*3+1], data[i*3+2] = 40, 150, 60 // BGR leaf green
	}
	type spot struct{ x, y int }
	var spots []spot
	for y := 37; y < H-10; y += 71 {
		for x := 23; x < W-10; x += 97 {
			spots = append(spots, spot{x, y})
			for dy := -r; dy < r; dy++ {
				for dx := -r; dx < r; dx++ {
					o := ((y+dy)*W + x + dx) * 3
					data[o], data[o+1], data[o+2] = 20, 40, 60 // brown-black lesion
				}
			}
		}
	}
	frame, _ := gocv.NewMatFromBytes(H, W, gocv.MatTypeCV8UC3, data)
	defer frame.Close()
	// visible is the share of lesions that stand out by at least 8 green
	// levels in the shrunk image; mean is their average contrast.
	measure := func(interp gocv.InterpolationFlags) (visible, mean float64) {
		small := gocv.NewMat()
		defer small.Close()
		rw, rh := imagenet.Geometry(W, H)
		gocv.Resize(frame, &small, image.Point{rw, rh}, 0, 0, interp)
		seen := 0
		for _, s := range spots {
			x, y := s.x*rw/W, s.y*rh/H
			best := 0.0
			for dy := -1; dy <= 1; dy++ {
				for dx := -1; dx <= 1; dx++ {
					g := float64(small.GetVecbAt(min(max(y+dy, 0), rh-1), min(max(x+dx, 0), rw-1))[1])
					best = max(best, 150-g) // how much darker than the leaf
				}
			}
			mean += best
			if best >= 8 {
				seen++
			}
		}
		return float64(seen) / float64(len(spots)), mean / float64(len(spots))
	}
	av, am := measure(Interpolation(W, H, 455, 256))
	lv, lm := measure(gocv.InterpolationLinear)
	t.Logf("2-px lesions after 1920x1080 → 455x256 (%d lesions): area shows %.0f%% (mean contrast %.1f green levels), single bilinear %.0f%% (mean %.1f)",
		len(spots), 100*av, am, 100*lv, lm)
	if av < 0.99 || lv > 0.8*av {
		t.Errorf("area shows %.0f%% of the lesions, bilinear %.0f%%", 100*av, 100*lv)
	}
}

func TestPreprocessAllocatesNothingPerFrame(t *testing.T) {
	frame := randomFrame(640, 480, 1)
	defer frame.Close()
	pp, _ := NewPreprocessor(imagenet, Tiling{Rows: 2, Cols: 2, Overlap: 0.2})
	defer pp.Close()
	pp.Run(frame)
	if a := testing.AllocsPerRun(20, func() { pp.Run(frame) }); a != 0 {
		t.Fatalf("%v Go allocations per frame", a)
	}
}

func TestPreprocessRejectsBadInput(t *testing.T) {
	if _, err := NewPreprocessor(Preprocess{InputSize: 224, Resize: 100, Std: [3]float32{1, 1, 1}}, Tiling{}); err == nil {
		t.Error("resize smaller than crop accepted")
	}
	if _, err := NewPreprocessor(Preprocess{InputSize: 224, Std: [3]float32{1, 0, 1}}, Tiling{}); err == nil {
		t.Error("zero std accepted")
	}
	if _, err := NewPreprocessor(imagenet, Tiling{Rows: 2, Cols: 2, Overlap: 1.5}); err == nil {
		t.Error("overlap 1.5 accepted")
	}
	pp, _ := NewPreprocessor(imagenet, Tiling{})
	defer pp.Close()
	empty := gocv.NewMat()
	defer empty.Close()
	if _, _, err := pp.Run(empty); err == nil {
		t.Error("empty frame accepted")
	}
}

func TestSnapshotEncodeAndCap(t *testing.T) {
	frame := randomFrame(1280, 720, 2)
	defer frame.Close()
	ov := Overlay{Camera: "bench1", Label: "Tomato___Late_blight", Confidence: 0.91, Alert: true,
		Tiles: []TileMark{{Box: image.Rect(0, 0, 640, 360), Label: "Tomato___Late_blight", Confidence: 0.95, Alert: true}}}
	jpeg, err := EncodeSnapshot(frame, ov, 640, 80)
	if err != nil {
		t.Fatal(err)
	}
	back, err := gocv.IMDecode(jpeg, gocv.IMReadColor)
	if err != nil || back.Cols() != 640 || back.Rows() != 360 {
		t.Fatalf("decoded snapshot %dx%d (%v)", back.Cols(), back.Rows(), err)
	}
	// The alert tile's border is drawn in red (BGR).
	if px := back.GetVecbAt(180, 1); px[2] < 150 || px[1] > 120 {
		t.Errorf("tile border pixel %v is not red", px)
	}
	back.Close()
	small, _ := EncodeSnapshot(frame, ov, 640, 20)
	if len(small) >= len(jpeg) {
		t.Errorf("quality 20 gave %d bytes, quality 80 gave %d", len(small), len(jpeg))
	}
	if _, err := EncodeSnapshot(frame, ov, 640, 0); err == nil {
		t.Error("quality 0 accepted")
	}

	dir := t.TempDir()
	sd, err := OpenSnapshotDir(dir, int64(3*len(jpeg)+10))
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 6; i++ {
		if _, err := sd.Save(fmt.Sprintf("bench1-%02d.jpg", i), jpeg); err != nil {
			t.Fatal(err)
		}
	}
	des, _ := os.ReadDir(dir)
	var names []string
	var total int64
	for _, de := range des {
		info, _ := de.Info()
		total += info.Size()
		names = append(names, de.Name())
	}
	if total > int64(3*len(jpeg)+10) || len(names) != 3 || !strings.HasSuffix(names[0], "-bench1-03.jpg") {
		t.Fatalf("after cap: %v (%d bytes)", names, total)
	}
	if _, err := sd.Save("../escape.jpg", jpeg); err == nil {
		t.Error("path traversal accepted")
	}
	if _, err := os.Stat(filepath.Join(dir, "..", "escape.jpg")); err == nil {
		t.Error("file written outside the snapshot dir")
	}
}

func BenchmarkPreprocess(b *testing.B) {
	for _, size := range []image.Point{{640, 480}, {1920, 1080}} {
		for _, tl := range []Tiling{{}, {Rows: 2, Cols: 3, Overlap: 0.2, Full: true}} {
			name := fmt.Sprintf("%dx%d/tiles=%d", size.X, size.Y, len(tl.Boxes(size.X, size.Y)))
			b.Run(name, func(b *testing.B) {
				frame := randomFrame(size.X, size.Y, 1)
				defer frame.Close()
				pp, _ := NewPreprocessor(imagenet, tl)
				defer pp.Close()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					pp.Run(frame)
				}
				b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(b.N), "ms/frame")
			})
		}
	}
}

// BenchmarkCaptureFPS measures how fast a video file source decodes
// 640x480 MJPEG frames (reader only, no pacing).
func BenchmarkCaptureFPS(b *testing.B) {
	p := filepath.Join(b.TempDir(), "vga.avi")
	vw, err := gocv.VideoWriterFile(p, "MJPG", 30, 640, 480, true)
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < 60; i++ {
		m := randomFrame(640, 480, uint64(i))
		vw.Write(m)
		m.Close()
	}
	vw.Close()
	spec, _ := ParseSource("file://" + p + "?loop=true")
	r, err := openCapture(context.Background(), spec)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close()
	m := gocv.NewMat()
	defer m.Close()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := r.Read(&m); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "frames/s")
}

// TestSnapshotTrimIgnoresTheClock: the oldest snapshot goes first even when
// the clock jumped and modification times say otherwise, and a write cut
// short leaves no temporary file.
func TestSnapshotTrimIgnoresTheClock(t *testing.T) {
	dir := t.TempDir()
	jpeg := make([]byte, 1000)
	sd, err := OpenSnapshotDir(dir, 3500)
	if err != nil {
		t.Fatal(err)
	}
	var paths []string
	for i := 0; i < 3; i++ {
		p, err := sd.Save(fmt.Sprintf("cam-%d.jpg", i), jpeg)
		if err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	// The clock was a year ahead when the first two were written, then NTP
	// stepped it back: by mtime, the newest file looks oldest.
	future := time.Now().Add(365 * 24 * time.Hour)
	os.Chtimes(paths[0], future, future)
	os.Chtimes(paths[1], future, future)
	if _, err := sd.Save("cam-3.jpg", jpeg); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(paths[0]); err == nil {
		t.Error("the oldest snapshot survived the trim")
	}
	if _, err := os.Stat(paths[2]); err != nil {
		t.Error("a newer snapshot was trimmed because of its mtime")
	}
	os.WriteFile(filepath.Join(dir, ".tmp-00000000000000000009-cam.jpg"), jpeg, 0o640)
	sd2, err := OpenSnapshotDir(dir, 3500)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, ".tmp-00000000000000000009-cam.jpg")); err == nil {
		t.Error("a leftover temporary file was kept")
	}
	p, _ := sd2.Save("cam-4.jpg", jpeg)
	if !strings.HasPrefix(filepath.Base(p), "00000000000000000005-") {
		t.Errorf("sequence did not continue after reopening: %s", p)
	}
}

// TestFitJPEG: a snapshot larger than the thumbnail cap is re-encoded
// smaller until it fits; an impossible cap is an error.
func TestFitJPEG(t *testing.T) {
	frame := randomFrame(1920, 1080, 3)
	defer frame.Close()
	big, err := EncodeSnapshot(frame, Overlay{Camera: "c", Label: "x"}, 960, 95)
	if err != nil {
		t.Fatal(err)
	}
	if len(big) <= 64<<10 {
		t.Fatalf("test frame encodes to only %d bytes", len(big))
	}
	fit, err := FitJPEG(big, 64<<10)
	if err != nil || len(fit) > 64<<10 {
		t.Fatalf("fit: %d bytes, %v", len(fit), err)
	}
	m, err := gocv.IMDecode(fit, gocv.IMReadColor)
	if err != nil || m.Empty() || m.Cols() < 160 {
		t.Fatalf("fitted JPEG does not decode: %v", err)
	}
	m.Close()
	if _, err := FitJPEG(big, 200); err == nil {
		t.Error("a 200-byte thumbnail was made")
	}
}
