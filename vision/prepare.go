package vision

import (
	"errors"
	"fmt"
	"image"
	"math"

	"gocv.io/x/gocv"
)

// PrepareVersion changes whenever Prepare would turn the same image into
// different numbers; caches of prepared images (finetune's feature cache)
// include it in their key.
const PrepareVersion = 2

// Crop says which part of the resized region becomes the model input, and
// whether it is mirrored. The daemon and evaluation use Centre; training
// draws random offsets within Preprocess.Geometry and a random mirror.
type Crop struct {
	X, Y   int // offset in the resized region; negative centres that axis
	Mirror bool
}

// Centre is the centred, unmirrored crop.
var Centre = Crop{X: -1, Y: -1}

// Geometry is the size a w×h region is resized to before the crop: the
// shorter side to Resize with the aspect kept, or, when Resize is 0, the
// whole region squashed to InputSize×InputSize (then there is nothing to
// crop: the input is the whole region, everywhere — daemon, training,
// evaluation and prediction).
func (p Preprocess) Geometry(w, h int) (rw, rh int) {
	s := p.InputSize
	if p.Resize == 0 {
		return s, s
	}
	if w <= h {
		return p.Resize, max(p.Resize, int(math.Round(float64(h)*float64(p.Resize)/float64(w))))
	}
	return max(p.Resize, int(math.Round(float64(w)*float64(p.Resize)/float64(h)))), p.Resize
}

// Scratch holds what Prepare reuses between calls: the resized image and
// the normalisation table. Not safe for concurrent use.
type Scratch struct {
	resized gocv.Mat
	lut     [3][256]float32
	lutFor  [6]float32 // the mean and std the table was built for
	built   bool
}

// NewScratch prepares reusable buffers; Close frees them.
func NewScratch() *Scratch { return &Scratch{resized: gocv.NewMat()} }

// Close frees the OpenCV buffer.
func (s *Scratch) Close() { s.resized.Close() }

func (s *Scratch) table(p Preprocess) *[3][256]float32 {
	key := [6]float32{p.Mean[0], p.Mean[1], p.Mean[2], p.Std[0], p.Std[1], p.Std[2]}
	if !s.built || s.lutFor != key {
		for c := 0; c < 3; c++ {
			for v := 0; v < 256; v++ {
				s.lut[c][v] = float32((float64(v)/255 - float64(p.Mean[c])) / float64(p.Std[c]))
			}
		}
		s.lutFor, s.built = key, true
	}
	return &s.lut
}

// Interpolation is the resize method Prepare uses for a w×h → rw×rh resize:
// area averaging when shrinking (every source pixel counts, so a lesion a
// few pixels wide in a 1920×1080 frame survives the shrink to 256 instead
// of falling between bilinear taps), bilinear when enlarging.
func Interpolation(w, h, rw, rh int) gocv.InterpolationFlags {
	if rw < w && rh < h {
		return gocv.InterpolationArea
	}
	return gocv.InterpolationLinear
}

// Prepare is Leafwatch's one preprocessing, shared by the daemon, finetune's
// training loader, evaluation and prediction: region box of a BGR frame →
// resize (Geometry, Interpolation) → crop (and mirror) → RGB normalised as
// (v/255 − mean)/std → NCHW float32 in dst (3×InputSize² values). With a
// reused Scratch it allocates nothing.
func Prepare(frame gocv.Mat, box image.Rectangle, p Preprocess, crop Crop, dst []float32, s *Scratch) error {
	if frame.Empty() {
		return errors.New("preprocess: empty frame")
	}
	if frame.Type() != gocv.MatTypeCV8UC3 {
		return fmt.Errorf("preprocess: frame type %v, want 8-bit BGR", frame.Type())
	}
	if !box.In(image.Rect(0, 0, frame.Cols(), frame.Rows())) || box.Empty() {
		return fmt.Errorf("preprocess: region %v outside the %dx%d frame", box, frame.Cols(), frame.Rows())
	}
	size := p.InputSize
	if len(dst) < 3*size*size {
		return fmt.Errorf("preprocess: destination holds %d values, need %d", len(dst), 3*size*size)
	}
	w, h := box.Dx(), box.Dy()
	rw, rh := p.Geometry(w, h)
	x0, y0 := crop.X, crop.Y
	if x0 < 0 {
		x0 = (rw - size) / 2
	}
	if y0 < 0 {
		y0 = (rh - size) / 2
	}
	if x0+size > rw || y0+size > rh {
		return fmt.Errorf("preprocess: crop at (%d,%d) leaves the %dx%d resized region", x0, y0, rw, rh)
	}
	roi := frame.Region(box)
	defer roi.Close()
	gocv.Resize(roi, &s.resized, image.Point{rw, rh}, 0, 0, Interpolation(w, h, rw, rh))
	data, err := s.resized.DataPtrUint8()
	if err != nil {
		return fmt.Errorf("preprocess: %w", err)
	}
	lut := s.table(p)
	lr, lg, lb := &lut[0], &lut[1], &lut[2]
	step, plane := s.resized.Step(), size*size
	r, g, b := dst[:plane], dst[plane:2*plane], dst[2*plane:3*plane]
	for y := 0; y < size; y++ {
		row := data[(y0+y)*step+x0*3 : (y0+y)*step+(x0+size)*3]
		o := y * size
		if crop.Mirror {
			for x := 0; x < size; x++ {
				px := row[(size-1-x)*3 : (size-1-x)*3+3 : (size-1-x)*3+3]
				b[o+x], g[o+x], r[o+x] = lb[px[0]], lg[px[1]], lr[px[2]]
			}
			continue
		}
		for x := 0; x < size; x++ {
			px := row[x*3 : x*3+3 : x*3+3]
			b[o+x], g[o+x], r[o+x] = lb[px[0]], lg[px[1]], lr[px[2]]
		}
	}
	return nil
}
