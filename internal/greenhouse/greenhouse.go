// Package greenhouse draws synthetic greenhouse scenes with known truth: a
// camera looking down on a bench — soil, slats, pots and stems — with
// plants whose leaves are of known classes, at different scales, touching
// and overlapping, partly hidden, under the colour cast of LED grow lights
// and uneven light, a little blurred. Every leaf's label and visible box
// are returned with the frame. It is Leafwatch's stand-in for a real
// greenhouse in the leaf-region measurements, the field-data experiments
// and the demo; its leaves follow internal/phenotype (the same diseases as
// finetune synth's PlantVillage-like set), drawn its own way.
package greenhouse

import (
	"image"
	"image/color"
	"math"
	"math/rand/v2"

	"gocv.io/x/gocv"

	"github.com/leafwatch/leafwatch/internal/phenotype"
	"github.com/leafwatch/leafwatch/model"
)

// Options describe a bench.
type Options struct {
	Width, Height int
	// Plants on the bench; each has one class (its leaves' label).
	Plants int
	// LeavesPerPlant is the range of leaves a plant has.
	LeavesPerPlant [2]int
	// LeafLength is the range of leaf lengths in pixels at this frame size.
	LeafLength [2]float64
	// Classes are drawn for the plants: Diseased of them get a disease
	// class (at random among the non-healthy Classes), the others a healthy
	// class of the same crop when Classes has one.
	Classes  []string
	Diseased int
	// Cast is the strength (0..1) of the grow lights' magenta cast; Uneven
	// the darkening towards the corners (0..1); Blur a Gaussian sigma in
	// pixels; Noise the sensor noise's standard deviation (0..255).
	Cast, Uneven, Blur, Noise float64
	Seed                      uint64
}

// Default is a 1920×1080 bench of 6 plants, one diseased, under a
// moderate LED cast.
func Default(classes []string, seed uint64) Options {
	return Options{Width: 1920, Height: 1080, Plants: 6, LeavesPerPlant: [2]int{3, 6}, LeafLength: [2]float64{110, 330},
		Classes: classes, Diseased: 1, Cast: 0.35, Uneven: 0.35, Blur: 1.0, Noise: 6, Seed: seed}
}

// Leaf is one leaf's truth.
type Leaf struct {
	Label   string          `json:"label"`
	Plant   int             `json:"plant"`
	Box     image.Rectangle `json:"box"`     // the visible pixels' bounding box
	Full    image.Rectangle `json:"full"`    // the whole leaf's, hidden parts included
	Visible float64         `json:"visible"` // visible pixels / leaf pixels
	Area    int             `json:"area"`    // visible pixels
}

// Plant is one plant's place and class.
type Plant struct {
	Label  string      `json:"label"`
	Centre image.Point `json:"centre"`
}

// Scene is one frame and its truth. Close frees the Mats.
type Scene struct {
	Frame  gocv.Mat // BGR
	Owner  gocv.Mat // 8-bit: 0 for no leaf, else 1 + the leaf's index
	Leaves []Leaf
	Plants []Plant
}

// Close frees the scene's Mats.
func (s *Scene) Close() {
	s.Frame.Close()
	s.Owner.Close()
}

// Layout is a bench's arrangement: where the plants and leaves are. A
// video re-renders one layout with small changes per frame (Render with
// Jitter), as a fixed camera sees a bench over time.
type Layout struct {
	opt    Options
	plants []Plant
	leaves []leafShape
}

type leafShape struct {
	plant     int
	label     string
	cx, cy    float64 // base of the leaf (towards the stem)
	angle     float64 // direction of the tip, radians
	length    float64
	width     float64 // of the widest part, as a fraction of length
	serration float64
	tilt      float64 // brightness of this leaf (its angle to the light)
	seed      uint64
	depth     float64 // drawing order: higher leaves later (on top)
}

// NewLayout places the plants and their leaves.
func NewLayout(opt Options) *Layout {
	rng := rand.New(rand.NewPCG(opt.Seed, 0x6e4e))
	l := &Layout{opt: opt}
	var healthy, diseased []string
	for _, c := range opt.Classes {
		if model.IsHealthy(c) {
			healthy = append(healthy, c)
		} else {
			diseased = append(diseased, c)
		}
	}
	// Plants on a jittered grid over the bench.
	cols := int(math.Ceil(math.Sqrt(float64(opt.Plants) * float64(opt.Width) / float64(opt.Height))))
	rows := int(math.Ceil(float64(opt.Plants) / float64(cols)))
	order := rng.Perm(opt.Plants)
	for i := 0; i < opt.Plants; i++ {
		r, c := i/cols, i%cols
		x := (float64(c) + 0.5 + 0.25*(rng.Float64()-0.5)) * float64(opt.Width) / float64(cols)
		y := (float64(r) + 0.5 + 0.25*(rng.Float64()-0.5)) * float64(opt.Height) / float64(rows)
		label := ""
		if order[i] < opt.Diseased && len(diseased) > 0 {
			label = diseased[rng.IntN(len(diseased))]
		} else if len(healthy) > 0 {
			label = healthy[rng.IntN(len(healthy))]
		} else {
			label = opt.Classes[rng.IntN(len(opt.Classes))]
		}
		l.plants = append(l.plants, Plant{Label: label, Centre: image.Pt(int(x), int(y))})
	}
	for pi, p := range l.plants {
		n := opt.LeavesPerPlant[0] + rng.IntN(opt.LeavesPerPlant[1]-opt.LeavesPerPlant[0]+1)
		look := phenotype.For(p.Label)
		base := rng.Float64() * 2 * math.Pi
		for j := 0; j < n; j++ {
			ang := base + 2*math.Pi*float64(j)/float64(n) + 0.5*(rng.Float64()-0.5)
			length := opt.LeafLength[0] + (opt.LeafLength[1]-opt.LeafLength[0])*rng.Float64()
			// Leaves start near the plant's centre, on short stems.
			off := length * (0.1 + 0.25*rng.Float64())
			l.leaves = append(l.leaves, leafShape{plant: pi, label: p.Label,
				cx: float64(p.Centre.X) + off*math.Cos(ang), cy: float64(p.Centre.Y) + off*math.Sin(ang),
				angle: ang, length: length, width: 0.55 * (0.6 + 0.8*look.Aspect) * (0.85 + 0.3*rng.Float64()),
				serration: 0.02 + 0.04*look.Lobes/3, tilt: 0.75 + 0.35*rng.Float64(), seed: rng.Uint64(), depth: rng.Float64()})
		}
	}
	return l
}

// Plants returns the layout's plants.
func (l *Layout) Plants() []Plant { return l.plants }

// Jitter is a frame's difference from the layout: leaves sway a little,
// the light changes.
type Jitter struct {
	Sway   float64 // radians of random leaf rotation
	Light  float64 // brightness factor
	Seed   uint64
	Lesion float64 // 0..1 how far the disease has spread (1: fully)
}

// Render draws the layout once.
func (l *Layout) Render(j Jitter) *Scene {
	opt := l.opt
	rng := rand.New(rand.NewPCG(opt.Seed^j.Seed, 0x5ce4e))
	if j.Light == 0 {
		j.Light = 1
	}
	if j.Lesion == 0 {
		j.Lesion = 1
	}
	s := &Scene{Frame: gocv.NewMatWithSize(opt.Height, opt.Width, gocv.MatTypeCV8UC3),
		Owner: gocv.NewMatWithSizeFromScalar(gocv.NewScalar(0, 0, 0, 0), opt.Height, opt.Width, gocv.MatTypeCV8U), Plants: l.plants}
	drawBench(&s.Frame, opt, rand.New(rand.NewPCG(opt.Seed, 0xbe4c)))
	// Pots and stems under the leaves.
	for _, p := range l.plants {
		r := int(opt.LeafLength[1] * 0.32)
		gocv.Circle(&s.Frame, p.Centre, r, rgb(0.13, 0.12, 0.12), -1)
		gocv.Circle(&s.Frame, p.Centre, r*85/100, rgb(0.24, 0.17, 0.11), -1)
	}
	order := make([]int, len(l.leaves))
	for i := range order {
		order[i] = i
	}
	sortBy(order, func(a, b int) bool { return l.leaves[a].depth < l.leaves[b].depth })
	full := make([]image.Rectangle, len(l.leaves))
	for _, i := range order {
		lf := l.leaves[i]
		lf.angle += j.Sway * rng.NormFloat64()
		p := l.plants[lf.plant].Centre
		gocv.Line(&s.Frame, p, image.Pt(int(lf.cx), int(lf.cy)), rgb(0.33, 0.38, 0.16), max(2, int(lf.length/60)))
		full[i] = drawLeaf(s, lf, i, j.Lesion)
	}
	l.truth(s, full)
	light(&s.Frame, opt, j.Light, rng)
	return s
}

// truth measures each leaf's visible pixels from the owner map.
func (l *Layout) truth(s *Scene, full []image.Rectangle) {
	n := len(l.leaves)
	minX, minY := make([]int, n), make([]int, n)
	maxX, maxY := make([]int, n), make([]int, n)
	area := make([]int, n)
	for i := range minX {
		minX[i], minY[i], maxX[i], maxY[i] = math.MaxInt, math.MaxInt, -1, -1
	}
	data, _ := s.Owner.DataPtrUint8()
	w := s.Owner.Cols()
	for idx, v := range data {
		if v == 0 {
			continue
		}
		i := int(v) - 1
		x, y := idx%w, idx/w
		area[i]++
		minX[i], maxX[i] = min(minX[i], x), max(maxX[i], x)
		minY[i], maxY[i] = min(minY[i], y), max(maxY[i], y)
	}
	for i, lf := range l.leaves {
		leaf := Leaf{Label: lf.label, Plant: lf.plant, Full: full[i], Area: area[i]}
		if area[i] > 0 {
			leaf.Box = image.Rect(minX[i], minY[i], maxX[i]+1, maxY[i]+1)
			total := leafArea(lf)
			leaf.Visible = math.Min(1, float64(area[i])/total)
		}
		s.Leaves = append(s.Leaves, leaf)
	}
}

func leafArea(lf leafShape) float64 {
	// The outline below: half-width w·sin(πt)^0.8 over the length.
	return lf.length * lf.length * lf.width * 2 * 0.68
}

// outline is a leaf's polygon: from the base along its axis to the tip on
// one side and back on the other, the half-width a slightly pointed sine
// with a serrated edge.
func outline(lf leafShape, rng *rand.Rand) []image.Point {
	const steps = 28
	ca, sa := math.Cos(lf.angle), math.Sin(lf.angle)
	var left, right []image.Point
	for k := 0; k <= steps; k++ {
		t := float64(k) / steps
		hw := lf.width * lf.length * math.Pow(math.Sin(math.Pi*math.Pow(t, 0.85)), 0.8)
		serr := 1 + lf.serration*math.Sin(float64(k)*2.7)*(0.5+rng.Float64())
		along := t * lf.length
		for side, pts := range []*[]image.Point{&left, &right} {
			sgn := float64(1 - 2*side)
			d := sgn * hw * serr
			*pts = append(*pts, image.Pt(int(lf.cx+along*ca-d*sa), int(lf.cy+along*sa+d*ca)))
		}
	}
	for i := len(right) - 1; i >= 0; i-- {
		left = append(left, right[i])
	}
	return left
}

// drawLeaf paints leaf i (its colour, veins, lesions) into the frame and
// marks its pixels in the owner map; it returns the leaf's whole box.
func drawLeaf(s *Scene, lf leafShape, i int, lesion float64) image.Rectangle {
	rng := rand.New(rand.NewPCG(lf.seed, 0x1eaf))
	look := phenotype.For(lf.label)
	pts := outline(lf, rng)
	bounds := image.Rect(0, 0, s.Frame.Cols(), s.Frame.Rows())
	box := image.Rectangle{Min: pts[0], Max: pts[0]}
	for _, p := range pts {
		box = box.Union(image.Rectangle{Min: p, Max: p.Add(image.Pt(1, 1))})
	}
	clip := box.Intersect(bounds)
	if clip.Empty() {
		return box
	}
	// Leaf-local canvas and mask over the clipped box.
	local := make([]image.Point, len(pts))
	for k, p := range pts {
		local[k] = p.Sub(clip.Min)
	}
	pv := gocv.NewPointsVectorFromPoints([][]image.Point{local})
	defer pv.Close()
	mask := gocv.NewMatWithSizeFromScalar(gocv.NewScalar(0, 0, 0, 0), clip.Dy(), clip.Dx(), gocv.MatTypeCV8U)
	defer mask.Close()
	gocv.FillPoly(&mask, pv, color.RGBA{255, 255, 255, 255})
	// Greenhouse leaves are a little darker and bluer than the
	// PlantVillage ones (other cultivar, other light), and each is lit by
	// its own angle.
	base := look.Leaf
	c := [3]float64{base[0]*0.8*lf.tilt + 0.02, base[1]*0.85*lf.tilt + 0.02, base[2]*0.9*lf.tilt + 0.05}
	paint := gocv.NewMatWithSizeFromScalar(scalar(c), clip.Dy(), clip.Dx(), gocv.MatTypeCV8UC3)
	defer paint.Close()
	// Veins: the midrib and a few laterals, lighter.
	ca, sa := math.Cos(lf.angle), math.Sin(lf.angle)
	at := func(t, d float64) image.Point {
		return image.Pt(int(lf.cx+t*lf.length*ca-d*sa)-clip.Min.X, int(lf.cy+t*lf.length*sa+d*ca)-clip.Min.Y)
	}
	vein := [3]float64{math.Min(1, c[0]+0.12), math.Min(1, c[1]+0.14), math.Min(1, c[2]+0.08)}
	thick := max(1, int(lf.length/90))
	gocv.Line(&paint, at(0, 0), at(0.97, 0), rgb(vein[0], vein[1], vein[2]), thick)
	for k := 1; k <= 5; k++ {
		t := float64(k) / 6.5
		for _, sgn := range []float64{1, -1} {
			gocv.Line(&paint, at(t, 0), at(t+0.12, sgn*lf.width*lf.length*0.8), rgb(vein[0], vein[1], vein[2]), max(1, thick/2))
		}
	}
	drawLesions(&paint, look, lf, rng, lesion, at)
	fr := s.Frame.Region(clip)
	paint.CopyToWithMask(&fr, mask)
	fr.Close()
	ow := s.Owner.Region(clip)
	idx := gocv.NewMatWithSizeFromScalar(gocv.NewScalar(float64(i+1), 0, 0, 0), clip.Dy(), clip.Dx(), gocv.MatTypeCV8U)
	idx.CopyToWithMask(&ow, mask)
	idx.Close()
	ow.Close()
	return box
}

// drawLesions draws the condition's lesions on a leaf canvas; spread
// (0..1) scales how many there are.
func drawLesions(paint *gocv.Mat, look phenotype.Look, lf leafShape, rng *rand.Rand, spread float64, at func(t, d float64) image.Point) {
	if look.Pattern == phenotype.Healthy || spread < 0.05 {
		return // healthy, or not yet showing
	}
	scale := lf.length / 200 // lesion sizes follow the leaf's size
	n := int(math.Round(float64(look.Spots) * spread))
	spot := rgb(look.Spot[0]*0.85, look.Spot[1]*0.85, look.Spot[2]*0.9)
	halo := rgb(0.62, 0.6, 0.18)
	inside := func() image.Point {
		t := 0.1 + 0.8*rng.Float64()
		hw := lf.width * lf.length * math.Pow(math.Sin(math.Pi*math.Pow(t, 0.85)), 0.8)
		return at(t, (2*rng.Float64()-1)*hw*0.8)
	}
	switch look.Pattern {
	case phenotype.Spots, phenotype.Rings:
		for k := 0; k < n; k++ {
			p, r := inside(), max(2, int(look.SpotR*scale*(0.5+rng.Float64())))
			gocv.Circle(paint, p, r+max(1, r/2), halo, -1)
			gocv.Circle(paint, p, r, spot, -1)
			if look.Pattern == phenotype.Rings {
				gocv.Circle(paint, p, max(1, r*5/10), halo, max(1, r/5))
			}
		}
	case phenotype.Blotch:
		for k := 0; k < max(1, n/3); k++ {
			p := inside()
			var poly []image.Point
			r := look.SpotR * scale * 2.6
			for a := 0; a < 9; a++ {
				th := float64(a) / 9 * 2 * math.Pi
				rr := r * (0.6 + 0.8*rng.Float64())
				poly = append(poly, image.Pt(p.X+int(rr*math.Cos(th)), p.Y+int(rr*math.Sin(th))))
			}
			pv := gocv.NewPointsVectorFromPoints([][]image.Point{poly})
			gocv.FillPoly(paint, pv, spot)
			pv.Close()
		}
	case phenotype.Powder:
		for k := 0; k < n*25; k++ {
			p := inside()
			gocv.Circle(paint, p, max(1, int(scale*1.5)), rgb(0.85, 0.86, 0.82), -1)
		}
	case phenotype.Mosaic:
		for k := 0; k < n; k++ {
			p := inside()
			axes := image.Pt(max(2, int(look.SpotR*scale*2)), max(2, int(look.SpotR*scale*1.2)))
			gocv.Ellipse(paint, p, axes, rng.Float64()*180, 0, 360, rgb(0.62, 0.72, 0.25), -1)
		}
	case phenotype.YellowEdge:
		// The edge band: the leaf's outline drawn thick in yellow (the mask
		// cuts it to the leaf).
		band := max(3, int(lf.length*lf.width*0.35*spread))
		pts := outline(lf, rng)
		cmin := at(0, 0).Sub(image.Pt(int(lf.cx), int(lf.cy))) // the canvas offset
		for k := range pts {
			pts[k] = pts[k].Add(cmin)
		}
		pv := gocv.NewPointsVectorFromPoints([][]image.Point{pts})
		gocv.Polylines(paint, pv, true, rgb(look.Spot[0]*0.8+0.1, 0.66, 0.16), band)
		pv.Close()
	}
}

// drawBench fills the frame with soil, the bench's slats and their gaps.
func drawBench(f *gocv.Mat, opt Options, rng *rand.Rand) {
	f.SetTo(scalar([3]float64{0.27, 0.2, 0.14}))
	// Soil texture: blotches of darker and lighter earth.
	for k := 0; k < opt.Width*opt.Height/2500; k++ {
		p := image.Pt(rng.IntN(opt.Width), rng.IntN(opt.Height))
		v := 0.15 + 0.2*rng.Float64()
		gocv.Circle(f, p, 2+rng.IntN(9), rgb(v*1.3, v, v*0.7), -1)
	}
	// Slats: grey-brown planks across the bench with dark gaps.
	slat := opt.Height / 7
	for y := rng.IntN(slat); y < opt.Height; y += slat {
		if rng.Float64() < 0.45 {
			continue // soil shows between the slats
		}
		g := 0.42 + 0.12*rng.Float64()
		gocv.Rectangle(f, image.Rect(0, y, opt.Width, y+slat*3/4), rgb(g*1.05, g, g*0.9), -1)
		gocv.Line(f, image.Pt(0, y+slat*3/4), image.Pt(opt.Width, y+slat*3/4), rgb(0.1, 0.09, 0.08), 3)
	}
}

// light applies the grow lights' cast, the uneven light, blur and noise.
func light(f *gocv.Mat, opt Options, bright float64, rng *rand.Rand) {
	if opt.Blur > 0 {
		gocv.GaussianBlur(*f, f, image.Point{}, opt.Blur, opt.Blur, gocv.BorderReflect101)
	}
	w, h := f.Cols(), f.Rows()
	// Per-channel gains (B, G, R): magenta LEDs lift red and blue.
	gain := [3]float64{1 + 0.35*opt.Cast, 1 - 0.3*opt.Cast, 1 + 0.45*opt.Cast}
	// A light centre off the middle; darker towards the far corner.
	lx, ly := float64(w)*(0.3+0.4*rng.Float64()), float64(h)*(0.3+0.4*rng.Float64())
	diag := math.Hypot(float64(w), float64(h))
	data, _ := f.DataPtrUint8()
	for y := 0; y < h; y++ {
		dy := float64(y) - ly
		for x := 0; x < w; x++ {
			d := math.Hypot(float64(x)-lx, dy) / diag
			l := bright * (1 - opt.Uneven*d*d*2.2)
			o := (y*w + x) * 3
			for c := 0; c < 3; c++ {
				v := float64(data[o+c])*gain[c]*l + opt.Noise*rng.NormFloat64()
				data[o+c] = uint8(math.Max(0, math.Min(255, v)))
			}
		}
	}
}

func rgb(r, g, b float64) color.RGBA {
	return color.RGBA{R: uint8(math.Min(255, r*255)), G: uint8(math.Min(255, g*255)), B: uint8(math.Min(255, b*255)), A: 255}
}

func scalar(c [3]float64) gocv.Scalar { return gocv.NewScalar(c[2]*255, c[1]*255, c[0]*255, 0) }

func sortBy(idx []int, less func(a, b int) bool) {
	for i := 1; i < len(idx); i++ {
		for j := i; j > 0 && less(idx[j], idx[j-1]); j-- {
			idx[j], idx[j-1] = idx[j-1], idx[j]
		}
	}
}
