package cpu

import "github.com/leafwatch/leafwatch/model"

// conv1 (11×11, stride 4) runs as Winograd too, after a space-to-depth
// rearrangement: each s×s block of input pixels becomes s² channels of one
// pixel, and a k×k kernel of stride s that spans at most three blocks
// (k ≤ 3s) becomes a 3×3, stride-1 kernel over C·s² channels, zero where
// the 3s×3s window reaches past the k×k kernel. That "valid" 3×3
// convolution then runs as F(2×2, 3×3) (winograd.go): for torchvision's
// conv1 16 × 64 × 48 × 784 multiply-adds (39 million) instead of im2col's
// 64 × 363 × 3025 (70 million), and no 4.4 MB column buffer per image.
// At batch 1 conv1 took 0.93 ms instead of 1.27 (torchvision) and 1.02
// instead of 1.36 (bvlc), the two forms alternating in one process; of the
// 0.93, the rearrangement 0.12, the transforms 0.19 + 0.10, the products
// 0.37 (208 GFLOP/s).

// s2dFits says whether layer l runs as Winograd after a space-to-depth
// rearrangement: an ungrouped convolution whose stride is at least 2 and
// whose kernel spans at most three strides.
func s2dFits(l *model.Layer) bool {
	return l.Kind == model.Conv && l.Stride >= 2 && l.Kernel <= 3*l.Stride && l.Groups == 1
}

// s2dForm is the 3×3 convolution a layer that s2dFits becomes.
type s2dForm struct {
	stride, pad int          // the original layer's
	in          model.Shape3 // the original input
	layer       model.Layer  // 3×3, stride 1, pad 0
	blocks      model.Shape3 // its input: C·s² channels of (out + 2)² blocks
}

// newS2DForm is layer l's 3×3 form for input in and output out. Block b
// holds input rows s·b − pad … s·b − pad + s − 1, so output y reads blocks
// y … y+2: the rows s·y − pad … s·y − pad + 3s − 1 that its window covers.
func newS2DForm(l *model.Layer, in, out model.Shape3) *s2dForm {
	s := l.Stride
	return &s2dForm{
		stride: s, pad: l.Pad, in: in,
		layer:  model.Layer{Kind: model.Conv, Name: l.Name, Group: l.Group, Out: l.Out, Kernel: 3, Stride: 1, Groups: 1},
		blocks: model.Shape3{C: in.C * s * s, H: out.H + 2, W: out.W + 2},
	}
}

// s2dFilters rearranges l's filters (out × C × k × k) into the 3×3 form's
// (out × C·s² × 3 × 3): kernel row ky is row ky/s of the block kernel, in
// the block's row ky%s.
func s2dFilters(l *model.Layer, in model.Shape3, w []float32) []float32 {
	s, k, c := l.Stride, l.Kernel, in.C
	cs := c * s * s
	f := make([]float32, l.Out*cs*9)
	for o := 0; o < l.Out; o++ {
		for ci := 0; ci < c; ci++ {
			for ky := 0; ky < k; ky++ {
				for kx := 0; kx < k; kx++ {
					q := (ci*s+ky%s)*s + kx%s
					f[((o*cs+q)*3+ky/s)*3+kx/s] = w[((o*c+ci)*k+ky)*k+kx]
				}
			}
		}
	}
	return f
}

// spaceToDepth writes block planes [q0, q1) of nb images (x: xs floats
// apart; dst: f.blocks.Len() apart): plane q = (c·s + dy)·s + dx holds
// input pixel (s·by − pad + dy, s·bx − pad + dx) of channel c at (by, bx),
// zero outside the image.
func (f *s2dForm) spaceToDepth(x []float32, xs, nb int, dst []float32, q0, q1 int) {
	s, in, b := f.stride, f.in, f.blocks
	bl := b.H * b.W
	for j := 0; j < nb; j++ {
		for q := q0; q < q1; q++ {
			c, dy, dx := q/(s*s), q/s%s, q%s
			plane := dst[j*b.Len()+q*bl:][:bl]
			src := x[j*xs+c*in.H*in.W:][:in.H*in.W]
			// Columns bx in [bx0, bx1) fall inside the image.
			bx0 := max(0, (f.pad-dx+s-1)/s)
			bx1 := min(b.W, max(bx0, (in.W+f.pad-dx+s-1)/s))
			for by := 0; by < b.H; by++ {
				row := plane[by*b.W:][:b.W]
				iy := s*by - f.pad + dy
				if iy < 0 || iy >= in.H {
					clear(row)
					continue
				}
				clear(row[:bx0])
				clear(row[bx1:])
				line := src[iy*in.W:][:in.W]
				for bx, ix := bx0, s*bx0-f.pad+dx; bx < bx1; bx, ix = bx+1, ix+s {
					row[bx] = line[ix]
				}
			}
		}
	}
}

// s2dArgs is one piece of a space-to-depth pass: block planes [q0, q1).
type s2dArgs struct {
	f      *s2dForm
	x, dst []float32
	xs, nb int
	q0, q1 int
}

func (a *s2dArgs) run() { a.f.spaceToDepth(a.x, a.xs, a.nb, a.dst, a.q0, a.q1) }

// spaceToDepthPar is spaceToDepth over all planes, split over the cores.
func (f *s2dForm) spaceToDepthPar(x []float32, xs, nb int, dst []float32) {
	total := f.blocks.C
	w := min(workers(), maxPieces, total)
	var buf [maxPieces]piece
	pieces := buf[:0]
	step := (total + w - 1) / w
	for q := 0; q < total; q += step {
		a := s2dArgs{f: f, x: x, dst: dst, xs: xs, nb: nb, q0: q, q1: min(total, q+step)}
		pieces = append(pieces, piece{kind: pieceSpaceToDepth, s2d: a})
	}
	runPieces(pieces)
}

// convForwardS2D is convForwardWinograd for a layer that s2dFits: each
// pass of images is rearranged into the tail of vbuf (beyond the
// transformed inputs, see winoBuffers) and convolved in its 3×3 form.
func convForwardS2D(l *model.Layer, in, out model.Shape3, n int, x []float32, ww *winoWeights, bias, y, vbuf, mbuf []float32, relu bool) {
	f := ww.s2d
	per := winoImagesPerPass(&f.layer, f.blocks, out, n)
	vl, _ := winoBuffers(&f.layer, f.blocks, out, per)
	blocks := vbuf[vl:][:per*f.blocks.Len()]
	for j0 := 0; j0 < n; j0 += per {
		nb := min(per, n-j0)
		f.spaceToDepthPar(x[j0*in.Len():], in.Len(), nb, blocks)
		winoConv(&f.layer, f.blocks, out, nb, blocks, ww, bias, y[j0*out.Len():], vbuf[:vl], mbuf, relu)
	}
}
