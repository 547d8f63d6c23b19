package vision

import (
	"errors"
	"fmt"
	"image"
	"math"

	"gocv.io/x/gocv"
)

// Preprocess is how a checkpoint wants its input: the model package's
// metadata fields, copied so vision does not depend on model.
type Preprocess struct {
	InputSize int
	// Resize is the shorter side before a centre crop of InputSize;
	// 0 resizes the whole region to InputSize×InputSize.
	Resize    int
	Mean, Std [3]float32 // RGB, on 0..1 values
}

// Tiling splits a frame into a grid of overlapping crops classified as one
// batch, so a leaf in a corner of a wide frame is seen at useful size.
type Tiling struct {
	Rows    int     `yaml:"rows"`
	Cols    int     `yaml:"cols"`
	Overlap float64 `yaml:"overlap"` // fraction of a tile shared with its neighbour, 0..0.9
	// Full also classifies the whole frame, as the batch's first image.
	Full bool `yaml:"full"`
}

// Enabled reports whether the frame is split at all.
func (t Tiling) Enabled() bool { return t.Rows*t.Cols > 1 }

// Validate checks the grid.
func (t Tiling) Validate() error {
	if t.Rows < 0 || t.Cols < 0 || t.Rows > 8 || t.Cols > 8 {
		return fmt.Errorf("tiling %dx%d: rows and cols must be 0..8", t.Rows, t.Cols)
	}
	if t.Overlap < 0 || t.Overlap > 0.9 {
		return fmt.Errorf("tiling overlap %v: must be 0..0.9", t.Overlap)
	}
	return nil
}

// Boxes returns the regions of a w×h frame that are classified, in batch order.
func (t Tiling) Boxes(w, h int) []image.Rectangle {
	full := image.Rect(0, 0, w, h)
	if !t.Enabled() {
		return []image.Rectangle{full}
	}
	var out []image.Rectangle
	if t.Full {
		out = append(out, full)
	}
	rows, cols := max(t.Rows, 1), max(t.Cols, 1)
	tw := float64(w) / (float64(cols) - float64(cols-1)*t.Overlap)
	th := float64(h) / (float64(rows) - float64(rows-1)*t.Overlap)
	for r := 0; r < rows; r++ {
		for c := 0; c < cols; c++ {
			x0 := int(math.Round(float64(c) * tw * (1 - t.Overlap)))
			y0 := int(math.Round(float64(r) * th * (1 - t.Overlap)))
			x1 := min(w, int(math.Round(float64(x0)+tw)))
			y1 := min(h, int(math.Round(float64(y0)+th)))
			if c == cols-1 {
				x1 = w
			}
			if r == rows-1 {
				y1 = h
			}
			out = append(out, image.Rect(x0, y0, x1, y1))
		}
	}
	return out
}

// Region modes: which parts of a frame are classified.
const (
	RegionsTiles  = "tiles"  // a grid of overlapping crops (Tiling)
	RegionsLeaves = "leaves" // the leaves found in the frame (Leaves); the tiling when none is found
)

// Regions choose the parts of a frame that are classified.
type Regions struct {
	Mode   string // RegionsTiles or RegionsLeaves
	Tiling Tiling // the tiles, and the leaves' fallback
	Leaves Leaves
}

// Validate checks the settings.
func (r Regions) Validate() error {
	if err := r.Tiling.Validate(); err != nil {
		return err
	}
	switch r.Mode {
	case RegionsTiles:
		return nil
	case RegionsLeaves:
		return r.Leaves.Validate()
	}
	return fmt.Errorf("regions %q: use leaves or tiles", r.Mode)
}

// Region kinds, as samples and payloads name them.
const (
	KindFrame = "frame"
	KindTile  = "tile"
	KindLeaf  = "leaf"
)

// Preprocessor turns BGR frames into NCHW float32 batches of the frame's
// regions (leaves or tiles), each through Prepare with a centred crop. It
// keeps its buffers between frames, so the steady state allocates nothing;
// it is not safe for concurrent use (one per camera).
type Preprocessor struct {
	p        Preprocess
	regions  Regions
	finder   *LeafFinder // leaves mode
	scratch  *Scratch
	out      []float32
	tiles    []image.Rectangle // the tiling's boxes for size
	boxes    []image.Rectangle // the last frame's regions
	kinds    []string
	fallback string
	size     image.Point
}

// NewPreprocessor prepares tiles (t zero: the whole frame only).
func NewPreprocessor(p Preprocess, t Tiling) (*Preprocessor, error) {
	return NewRegionPreprocessor(p, Regions{Mode: RegionsTiles, Tiling: t})
}

// NewRegionPreprocessor validates the settings and prepares buffers.
func NewRegionPreprocessor(p Preprocess, r Regions) (*Preprocessor, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	pp := &Preprocessor{p: p, regions: r, scratch: NewScratch()}
	if r.Mode == RegionsLeaves {
		f, err := NewLeafFinder(r.Leaves)
		if err != nil {
			pp.scratch.Close()
			return nil, err
		}
		pp.finder = f
		n := r.Leaves.MaxRegions + 1
		pp.boxes, pp.kinds = make([]image.Rectangle, 0, n), make([]string, 0, n)
	}
	return pp, nil
}

// Validate checks a model's preprocessing metadata.
func (p Preprocess) Validate() error {
	if p.InputSize < 8 {
		return fmt.Errorf("input size %d is too small", p.InputSize)
	}
	if p.Resize != 0 && p.Resize < p.InputSize {
		return fmt.Errorf("resize %d is smaller than the %d crop", p.Resize, p.InputSize)
	}
	for i, s := range p.Std {
		if !(s > 0) || math.IsInf(float64(s), 0) {
			return fmt.Errorf("std[%d] = %v must be positive", i, s)
		}
	}
	return nil
}

// Close frees the OpenCV buffers.
func (pp *Preprocessor) Close() {
	pp.scratch.Close()
	if pp.finder != nil {
		pp.finder.Close()
	}
}

// Kinds names the last frame's regions (KindFrame, KindTile, KindLeaf),
// in batch order; owned by the Preprocessor.
func (pp *Preprocessor) Kinds() []string { return pp.kinds }

// Fallback says why the last frame's leaves were not used
// (FallbackNoColour, FallbackNoVegetation), "" when they were or in tiles
// mode.
func (pp *Preprocessor) Fallback() string { return pp.fallback }

// ImageLen is the number of floats per image in the batch.
func (pp *Preprocessor) ImageLen() int { return 3 * pp.p.InputSize * pp.p.InputSize }

// Run preprocesses one frame. The returned batch and boxes are owned by the
// Preprocessor and valid until the next call.
func (pp *Preprocessor) Run(frame gocv.Mat) ([]float32, []image.Rectangle, error) {
	if frame.Empty() {
		return nil, nil, errors.New("empty frame")
	}
	w, h := frame.Cols(), frame.Rows()
	if (image.Point{w, h}) != pp.size {
		pp.size = image.Point{w, h}
		pp.tiles = pp.regions.Tiling.Boxes(w, h)
		n := len(pp.tiles)
		if pp.finder != nil {
			n = max(n, pp.regions.Leaves.MaxRegions+1)
		}
		if cap(pp.out) < n*pp.ImageLen() {
			pp.out = make([]float32, n*pp.ImageLen())
		}
		if cap(pp.boxes) < n {
			pp.boxes, pp.kinds = make([]image.Rectangle, 0, n), make([]string, 0, n)
		}
	}
	if err := pp.choose(frame); err != nil {
		return nil, nil, err
	}
	il := pp.ImageLen()
	out := pp.out[:len(pp.boxes)*il]
	for i, b := range pp.boxes {
		if err := Prepare(frame, b, pp.p, Centre, out[i*il:(i+1)*il], pp.scratch); err != nil {
			return nil, nil, err
		}
	}
	return out, pp.boxes, nil
}

// choose sets the frame's regions: its leaves in leaves mode (with the
// whole frame first when Leaves.Full), else — and when no leaf is found —
// the tiling's boxes.
func (pp *Preprocessor) choose(frame gocv.Mat) error {
	pp.boxes, pp.kinds, pp.fallback = pp.boxes[:0], pp.kinds[:0], ""
	if pp.finder != nil {
		found, why, err := pp.finder.Find(frame)
		if err != nil {
			return err
		}
		if why == "" {
			if pp.regions.Leaves.Full {
				pp.boxes = append(pp.boxes, image.Rect(0, 0, frame.Cols(), frame.Rows()))
				pp.kinds = append(pp.kinds, KindFrame)
			}
			for _, l := range found {
				pp.boxes = append(pp.boxes, l.Box)
				pp.kinds = append(pp.kinds, KindLeaf)
			}
			return nil
		}
		pp.fallback = why
	}
	for i, b := range pp.tiles {
		pp.boxes = append(pp.boxes, b)
		if len(pp.tiles) == 1 || (pp.regions.Tiling.Full && i == 0) {
			pp.kinds = append(pp.kinds, KindFrame)
		} else {
			pp.kinds = append(pp.kinds, KindTile)
		}
	}
	return nil
}
