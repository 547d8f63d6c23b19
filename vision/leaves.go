package vision

import (
	"cmp"
	"errors"
	"fmt"
	"image"
	"math"
	"slices"
	"unsafe"

	"gocv.io/x/gocv"
)

// Leaves configures the leaf-region stage: find the leaves in a frame and
// classify each one, instead of fixed tiles.
type Leaves struct {
	// MaxRegions: at most this many leaves per frame, largest first.
	MaxRegions int `yaml:"max_regions"`
	// Full also classifies the whole frame, as the batch's first image.
	Full bool `yaml:"full"`
	// Margin around a leaf's box, as a fraction of its longer side: the
	// model was trained on leaves with some background around them.
	Margin float64 `yaml:"margin"`
	// MinArea: a leaf must cover at least this fraction of the frame.
	MinArea float64 `yaml:"min_area"`
	// Index is the vegetation index: exg (excess green after a grey-world
	// balance, default), exg-raw (without the balance) or hsv (a hue
	// range after the balance). See the README's measurements.
	Index string `yaml:"index"`
}

// DefaultLeaves: up to 8 leaves, 15% margin, leaves of at least 0.2% of
// the frame, excess green after a grey-world balance.
func DefaultLeaves() Leaves {
	return Leaves{MaxRegions: 8, Margin: 0.15, MinArea: 0.002, Index: "exg"}
}

// Validate checks the settings.
func (l Leaves) Validate() error {
	var errs []error
	if l.MaxRegions < 1 || l.MaxRegions > 32 {
		errs = append(errs, fmt.Errorf("max_regions %d: use 1..32", l.MaxRegions))
	}
	if l.Margin < 0 || l.Margin > 1 {
		errs = append(errs, fmt.Errorf("margin %v: use 0..1", l.Margin))
	}
	if l.MinArea <= 0 || l.MinArea > 0.5 {
		errs = append(errs, fmt.Errorf("min_area %v: use a fraction of the frame in (0, 0.5]", l.MinArea))
	}
	switch l.Index {
	case "exg", "exg-raw", "hsv":
	default:
		errs = append(errs, fmt.Errorf("index %q: use exg, exg-raw or hsv", l.Index))
	}
	return errors.Join(errs...)
}

// Why a frame fell back from leaves to the camera's tiles (or the whole frame).
const (
	FallbackNoColour     = "no_colour"     // night, infrared, a grey camera
	FallbackNoVegetation = "no_vegetation" // nothing green enough, or no leaf of usable size
)

// LeafRegion is one leaf found.
type LeafRegion struct {
	Box   image.Rectangle // the square crop (with margin) that is classified
	Tight image.Rectangle // the leaf's own bounding box
	Area  float64         // the leaf's pixels, as a fraction of the frame
}

// workWidth is the width the stage works at: leaves are large at 1920
// pixels, and a 480-pixel copy holds their shape at a sixteenth of the
// work (5.8 ms per 1080p frame on this project's 2-core build machine).
// Measured on held-out greenhouse frames: 320 is 35% faster but finds
// fewer leaves (recall 0.755 against 0.779); widths that do not divide
// 1920 (400, 360) are slower than 480, because the area resize loses its
// integer-factor path.
const workWidth = 480

// suppress: a peak suppresses the weaker ones within this many times its own
// distance to the edge (1.1 measured best of 0.7–2 on greenhouse frames:
// lower splits leaves along their midrib, higher merges overlapping ones).
const suppress = 1.1

// maxComponents bounds the labels a frame may produce (beyond, the rest
// are ignored: a frame of confetti is not leaves).
const maxComponents = 1024

// LeafFinder finds leaves: a vegetation mask (excess green, Otsu's
// threshold), cleaned by morphology, split where leaves touch (distance
// transform, one marker per leaf core, watershed), filtered by area, shape
// and fill. It keeps every buffer between frames (no allocation per frame
// in the steady state); not safe for concurrent use.
type LeafFinder struct {
	opt                           Leaves
	small, index, mask, tmp, dist gocv.Mat
	peaks, markers                gocv.Mat
	openK, closeK, peakK          gocv.Mat
	area                          [maxComponents]int
	minX, minY, maxX, maxY        [maxComponents]int
	found                         []LeafRegion
	cand, peakAt                  []int
	workSize                      image.Point
}

// NewLeafFinder prepares the buffers.
func NewLeafFinder(opt Leaves) (*LeafFinder, error) {
	if err := opt.Validate(); err != nil {
		return nil, err
	}
	f := &LeafFinder{opt: opt}
	for _, m := range []*gocv.Mat{&f.small, &f.index, &f.mask, &f.tmp, &f.dist, &f.peaks, &f.markers} {
		*m = gocv.NewMat()
	}
	f.peakK = gocv.GetStructuringElement(gocv.MorphRect, image.Pt(3, 3))
	f.openK = gocv.GetStructuringElement(gocv.MorphEllipse, image.Pt(3, 3))
	f.closeK = gocv.GetStructuringElement(gocv.MorphEllipse, image.Pt(7, 7))
	f.found = make([]LeafRegion, 0, maxComponents)
	f.cand = make([]int, 0, 8192)
	f.peakAt = make([]int, 0, maxComponents)
	return f, nil
}

// Close frees the buffers.
func (f *LeafFinder) Close() {
	for _, m := range []*gocv.Mat{&f.small, &f.index, &f.mask, &f.tmp, &f.dist, &f.peaks, &f.markers, &f.openK, &f.closeK, &f.peakK} {
		m.Close()
	}
}

// Find returns the frame's leaves, largest first (at most MaxRegions), or
// none and why (FallbackNoColour, FallbackNoVegetation). The slice is
// owned by the finder and valid until the next call.
func (f *LeafFinder) Find(frame gocv.Mat) ([]LeafRegion, string, error) {
	if frame.Empty() || frame.Type() != gocv.MatTypeCV8UC3 {
		return nil, "", errors.New("leaves: want a non-empty 8-bit BGR frame")
	}
	fw, fh := frame.Cols(), frame.Rows()
	w := min(workWidth, fw)
	h := max(1, int(math.Round(float64(fh)*float64(w)/float64(fw))))
	f.workSize = image.Pt(w, h)
	gocv.Resize(frame, &f.small, f.workSize, 0, 0, Interpolation(fw, fh, w, h))
	if why := f.vegetation(); why != "" {
		return nil, why, nil
	}
	n := f.split()
	f.collect(n, float64(fw)/float64(w), fw, fh)
	if len(f.found) == 0 {
		return nil, FallbackNoVegetation, nil
	}
	return f.found, "", nil
}

// vegetation builds the mask of green pixels; it reports a frame without
// usable colour or without vegetation.
func (f *LeafFinder) vegetation() string {
	px, err := f.small.DataPtrUint8()
	if err != nil {
		return FallbackNoColour
	}
	// The frame's means and colourfulness from every fourth pixel: they
	// only gate and balance, and this pass was a tenth of the stage.
	var sum [3]int
	var chroma, sampled int
	for i := 0; i+2 < len(px); i += 12 {
		b, g, r := px[i], px[i+1], px[i+2]
		sum[0], sum[1], sum[2] = sum[0]+int(b), sum[1]+int(g), sum[2]+int(r)
		chroma += int(max(b, g, r) - min(b, g, r))
		sampled++
	}
	n := float64(len(px) / 3)
	// A grey or infrared camera: the channels hardly differ anywhere.
	if float64(chroma)/float64(max(1, sampled)) < 6 {
		return FallbackNoColour
	}
	// Grey-world balance: each channel divided by its mean (so a grow
	// light's cast, which lifts red and blue, is taken out first).
	gain := [3]float64{1, 1, 1}
	if f.opt.Index != "exg-raw" {
		mean := float64(sum[0]+sum[1]+sum[2]) / 3
		for c := range gain {
			gain[c] = mean / math.Max(1, float64(sum[c]))
		}
	}
	if f.index.Rows() != f.small.Rows() || f.index.Cols() != f.small.Cols() {
		f.index.Close()
		f.index = gocv.NewMatWithSize(f.small.Rows(), f.small.Cols(), gocv.MatTypeCV8U)
	}
	idx, _ := f.index.DataPtrUint8()
	if f.opt.Index == "hsv" {
		f.hueMask(px, idx, gain)
	} else {
		// Excess green on chromaticity: (2g − r − b), g = G/(R+G+B); 128
		// is grey, and the scale puts a leaf at 170–230.
		// float32 and explicit clamps: this loop is a quarter of the stage.
		gb, gg, gr := float32(gain[0]), float32(gain[1]), float32(gain[2])
		for i, j := 0, 0; i+2 < len(px); i, j = i+3, j+1 {
			b, g, r := float32(px[i])*gb, float32(px[i+1])*gg, float32(px[i+2])*gr
			v := 128 + 200*(2*g-r-b)/(b+g+r+1)
			if v < 0 {
				v = 0
			} else if v > 255 {
				v = 255
			}
			idx[j] = uint8(v)
		}
	}
	t := gocv.Threshold(f.index, &f.mask, 0, 255, gocv.ThresholdBinary|gocv.ThresholdOtsu)
	// Otsu always splits a frame in two; the upper part must be green.
	const minGreen = 150 // excess green of at least 0.11
	if t < minGreen && f.opt.Index != "hsv" {
		gocv.Threshold(f.index, &f.mask, minGreen, 255, gocv.ThresholdBinary)
	}
	gocv.MorphologyEx(f.mask, &f.tmp, gocv.MorphOpen, f.openK)
	gocv.MorphologyEx(f.tmp, &f.mask, gocv.MorphClose, f.closeK)
	if float64(gocv.CountNonZero(f.mask)) < f.opt.MinArea*n {
		return FallbackNoVegetation
	}
	return ""
}

// hueMask marks green hues (after the balance) with enough saturation and
// light as 255 in idx, the rest 0 (the threshold that follows keeps it).
func (f *LeafFinder) hueMask(px, idx []byte, gain [3]float64) {
	for i, j := 0, 0; i+2 < len(px); i, j = i+3, j+1 {
		b, g, r := float64(px[i])*gain[0], float64(px[i+1])*gain[1], float64(px[i+2])*gain[2]
		mx, mn := math.Max(b, math.Max(g, r)), math.Min(b, math.Min(g, r))
		idx[j] = 0
		if mx < 30 || mx-mn < 0.18*mx || mx != g {
			continue
		}
		// Hue in degrees, green at 120: between 70 and 170.
		hue := 120 + 60*(b-r)/(mx-mn)
		if hue >= 70 && hue <= 170 {
			idx[j] = 255
		}
	}
}

// split labels the mask's leaves. One marker per leaf: the peaks of the
// distance to the mask's edge (a leaf's middle is far from any edge), taken
// largest first, each suppressing the weaker peaks within twice its own
// distance (the rest of its own leaf's midrib, and a leaf it overlaps by
// more than half). Watershed on the image grows the markers back to the
// edges, dividing touching leaves along their seam. It returns the labels
// used (markers 1..n-1; n is the background).
func (f *LeafFinder) split() int {
	gocv.DistanceTransform(f.mask, &f.dist, &f.tmp, gocv.DistL2, gocv.DistanceMask5, gocv.DistanceLabelCComp)
	gocv.Dilate(f.dist, &f.peaks, f.peakK)
	dist, _ := f.dist.DataPtrFloat32()
	dil, _ := f.peaks.DataPtrFloat32()
	w := f.workSize.X
	f.cand = f.cand[:0]
	for i, d := range dist {
		if d >= 2.5 && d >= dil[i] && len(f.cand) < cap(f.cand) {
			f.cand = append(f.cand, i)
		}
	}
	slices.SortFunc(f.cand, func(a, b int) int { return cmp.Compare(dist[b], dist[a]) })
	f.peakAt = f.peakAt[:0]
	for _, i := range f.cand {
		x, y := i%w, i/w
		near := false
		for _, j := range f.peakAt {
			dx, dy := float32(x-j%w), float32(y-j/w)
			r := suppress * dist[j]
			if dx*dx+dy*dy < r*r {
				near = true
				break
			}
		}
		if !near && len(f.peakAt) < maxComponents-2 {
			f.peakAt = append(f.peakAt, i)
		}
	}
	n := len(f.peakAt) + 1
	if f.markers.Rows() != f.mask.Rows() || f.markers.Cols() != f.mask.Cols() || f.markers.Type() != gocv.MatTypeCV32S {
		f.markers.Close()
		f.markers = gocv.NewMatWithSize(f.mask.Rows(), f.mask.Cols(), gocv.MatTypeCV32S)
	}
	// The background marker: pixels well outside the mask; unknown (0)
	// elsewhere; each peak a small disc of its own label.
	gocv.Dilate(f.mask, &f.tmp, f.closeK)
	bg, _ := f.tmp.DataPtrUint8()
	marks, _ := int32s(&f.markers)
	for i := range marks {
		marks[i] = 0
		if bg[i] == 0 {
			marks[i] = int32(n)
		}
	}
	h := f.workSize.Y
	for k, i := range f.peakAt {
		x, y := i%w, i/w
		r := max(1, int(dist[i]*0.5))
		for yy := max(0, y-r); yy <= min(h-1, y+r); yy++ {
			for xx := max(0, x-r); xx <= min(w-1, x+r); xx++ {
				if (xx-x)*(xx-x)+(yy-y)*(yy-y) <= r*r {
					marks[yy*w+xx] = int32(k + 1)
				}
			}
		}
	}
	gocv.Watershed(f.small, &f.markers)
	return n
}

// collect measures each watershed region inside the mask, keeps the
// leaf-like ones and turns them into square crops in frame pixels.
func (f *LeafFinder) collect(n int, scale float64, fw, fh int) {
	for i := 1; i < n; i++ {
		f.area[i] = 0
		f.minX[i], f.minY[i], f.maxX[i], f.maxY[i] = math.MaxInt, math.MaxInt, -1, -1
	}
	marks, _ := int32s(&f.markers)
	mask, _ := f.mask.DataPtrUint8()
	w := f.workSize.X
	for i, m := range marks {
		if m <= 0 || int(m) >= n || mask[i] == 0 {
			continue
		}
		x, y := i%w, i/w
		f.area[m]++
		f.minX[m], f.maxX[m] = min(f.minX[m], x), max(f.maxX[m], x)
		f.minY[m], f.maxY[m] = min(f.minY[m], y), max(f.maxY[m], y)
	}
	total := float64(f.workSize.X * f.workSize.Y)
	f.cand = f.cand[:0]
	for i := 1; i < n; i++ {
		a := f.area[i]
		if a == 0 || float64(a) < f.opt.MinArea*total {
			continue
		}
		bw, bh := f.maxX[i]-f.minX[i]+1, f.maxY[i]-f.minY[i]+1
		long, short := max(bw, bh), min(bw, bh)
		// Shape: not a thread (a stem, a slat's edge), and filling a fair
		// part of its box (a leaf, not a ring of foliage around soil).
		if float64(long) > 5*float64(short) || float64(a) < 0.3*float64(bw*bh) {
			continue
		}
		f.cand = append(f.cand, i)
	}
	// Largest first (insertion sort: a few dozen at most, no allocation).
	for i := 1; i < len(f.cand); i++ {
		for j := i; j > 0 && f.area[f.cand[j]] > f.area[f.cand[j-1]]; j-- {
			f.cand[j], f.cand[j-1] = f.cand[j-1], f.cand[j]
		}
	}
	f.found = f.found[:0]
	for _, i := range f.cand {
		if len(f.found) == f.opt.MaxRegions {
			break
		}
		tight := image.Rect(int(float64(f.minX[i])*scale), int(float64(f.minY[i])*scale),
			int(math.Ceil(float64(f.maxX[i]+1)*scale)), int(math.Ceil(float64(f.maxY[i]+1)*scale))).Intersect(image.Rect(0, 0, fw, fh))
		f.found = append(f.found, LeafRegion{Box: squareCrop(tight, f.opt.Margin, fw, fh), Tight: tight, Area: float64(f.area[i]) / total})
	}
}

// int32s views a CV_32S Mat's data (gocv has no DataPtrInt32).
func int32s(m *gocv.Mat) ([]int32, error) {
	b, err := m.DataPtrUint8()
	if err != nil || len(b) < 4 {
		return nil, err
	}
	return unsafe.Slice((*int32)(unsafe.Pointer(&b[0])), len(b)/4), nil
}

// squareCrop is a square around box, larger by margin of its longer side
// on each side, moved (not cut) to stay inside the frame where it fits.
func squareCrop(box image.Rectangle, margin float64, fw, fh int) image.Rectangle {
	side := int(math.Round(float64(max(box.Dx(), box.Dy())) * (1 + 2*margin)))
	side = min(side, fw, fh)
	side = max(side, 8)
	cx, cy := (box.Min.X+box.Max.X)/2, (box.Min.Y+box.Max.Y)/2
	x0 := min(max(cx-side/2, 0), fw-side)
	y0 := min(max(cy-side/2, 0), fh-side)
	return image.Rect(x0, y0, x0+side, y0+side)
}
