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

// refPreprocess is the float64 reference: OpenCV's half-pixel-centre
// bilinear resize of the region, centre crop, BGR→RGB, (v/255-mean)/std.
func refPreprocess(frame gocv.Mat, box image.Rectangle, p Preprocess) []float64 {
	rw, rh, x0, y0 := p.cropGeometry(box.Dx(), box.Dy())
	sx := float64(box.Dx()) / float64(rw)
	sy := float64(box.Dy()) / float64(rh)
	px := func(x, y, c int) float64 {
		x = min(max(x, 0), box.Dx()-1)
		y = min(max(y, 0), box.Dy()-1)
		return float64(frame.GetVecbAt(box.Min.Y+y, box.Min.X+x)[c])
	}
	s := p.InputSize
	out := make([]float64, 3*s*s)
	for y := 0; y < s; y++ {
		fy := (float64(y+y0)+0.5)*sy - 0.5
		iy := int(math.Floor(fy))
		wy := fy - float64(iy)
		if fy < 0 {
			iy, wy = 0, 0
		}
		for x := 0; x < s; x++ {
			fx := (float64(x+x0)+0.5)*sx - 0.5
			ix := int(math.Floor(fx))
			wx := fx - float64(ix)
			if fx < 0 {
				ix, wx = 0, 0
			}
			for c := 0; c < 3; c++ {
				v := (1-wy)*((1-wx)*px(ix, iy, c)+wx*px(ix+1, iy, c)) + wy*((1-wx)*px(ix, iy+1, c)+wx*px(ix+1, iy+1, c))
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
				want := refPreprocess(frame, b, tc.p)
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
