package cpu

import "github.com/leafwatch/leafwatch/model"

// Winograd F(2×2, 3×3) for the 3×3, stride-1, pad-1 convolutions of
// inference (conv3–5, over half of AlexNet's multiply-adds; conv2's 5×5
// runs as F(3×3, 5×5) on the same machinery, winograd5.go; conv1 as a
// "valid" 3×3 convolution after a space-to-depth rearrangement,
// spacedepth.go): 16 multiplies
// per 2×2 outputs instead of 36, as 16 GEMMs between transformed filters
// (computed once per classifier) and transformed input tiles. F(2×2) and not
// F(4×4): its transforms are additions only, so it stays within a few ulps
// of the direct convolution (the peer cross-checks hold their 1e-6), and
// its filters take 16/9 of the weights (+15 MB for conv3–5) where F(4×4)
// takes 4× (+34 MB). Training keeps im2col (convForward, the reference).

// winoWeights is one layer's transformed filters: per group, side²
// matrices coutG × cinG (U = G g Gᵀ), ξ after ξ.
type winoWeights struct {
	u           []float32
	coutG, cinG int
	side        int      // input tile side: 4 for F(2×2, 3×3), 7 for F(3×3, 5×5)
	s2d         *s2dForm // conv1: the 3×3 form these filters are of (spacedepth.go)
}

// winogradFits says whether layer l runs as Winograd: F(2×2, 3×3) for the
// 3×3 convolutions, F(3×3, 5×5) (winograd5.go) for the 5×5 one, both
// stride 1 and "same" padding, and F(2×2, 3×3) after a space-to-depth
// rearrangement for conv1 (s2dFits).
func winogradFits(l *model.Layer) bool {
	return l.Kind == model.Conv && l.Stride == 1 && (l.Kernel == 3 && l.Pad == 1 || l.Kernel == 5 && l.Pad == 2) || s2dFits(l)
}

// winoTransforms is how many transforms (and GEMMs) layer l's Winograd
// form has: the input tile's area.
func winoTransforms(l *model.Layer) int {
	a := winoOutTile(l) + l.Kernel - 1
	return a * a
}

// newWinoWeights transforms the filters of a layer that winogradFits, with
// input in and output out.
func newWinoWeights(l *model.Layer, in, out model.Shape3, w []float32) *winoWeights {
	if s2dFits(l) {
		f := newS2DForm(l, in, out)
		ww := transformFilters(&f.layer, f.blocks, s2dFilters(l, in, w))
		ww.s2d = f
		return ww
	}
	if l.Kernel == 5 {
		return transformFilters5(l, in, w)
	}
	return transformFilters(l, in, w)
}

// transformFilters computes U = G g Gᵀ for every filter of l, with
// G = [1 0 0; ½ ½ ½; ½ −½ ½; 0 0 1].
func transformFilters(l *model.Layer, in model.Shape3, w []float32) *winoWeights {
	cinG, coutG := in.C/l.Groups, l.Out/l.Groups
	ww := &winoWeights{u: make([]float32, l.Groups*16*coutG*cinG), coutG: coutG, cinG: cinG, side: 4}
	for g := 0; g < l.Groups; g++ {
		u := ww.u[g*16*coutG*cinG:]
		for o := 0; o < coutG; o++ {
			for c := 0; c < cinG; c++ {
				f := w[((g*coutG+o)*cinG+c)*9:][:9]
				var gg [4][3]float32 // G g
				for s := 0; s < 3; s++ {
					g0, g1, g2 := f[s], f[3+s], f[6+s]
					gg[0][s] = g0
					gg[1][s] = (g0 + g1 + g2) / 2
					gg[2][s] = (g0 - g1 + g2) / 2
					gg[3][s] = g2
				}
				for r := 0; r < 4; r++ { // (G g) Gᵀ
					g0, g1, g2 := gg[r][0], gg[r][1], gg[r][2]
					row := [4]float32{g0, (g0 + g1 + g2) / 2, (g0 - g1 + g2) / 2, g2}
					for s, v := range row {
						u[((r*4+s)*coutG+o)*cinG+c] = v
					}
				}
			}
		}
	}
	return ww
}

// winoTiles is the 2×2 tiles covering an h×w output.
func winoTiles(h, w int) int { return winoTilesM(h, w, 2) }

// winoTilesM is the m×m tiles covering an h×w output.
func winoTilesM(h, w, m int) int { return ((h + m - 1) / m) * ((w + m - 1) / m) }

// winoLayerTiles is the tiles of layer l's Winograd form covering one
// image's output.
func winoLayerTiles(l *model.Layer, out model.Shape3) int {
	return winoTilesM(out.H, out.W, winoOutTile(l))
}

// winoOutTile is the output tile side of layer l's Winograd form: 2×2 for
// the 3×3 kernels, 3×3 for the 5×5 one (27 = 9 tiles of 3, none wasted).
func winoOutTile(l *model.Layer) int {
	if l.Kernel == 5 {
		return 3
	}
	return 2
}

// winoChunk is how many output channels share one round of GEMMs and the
// output transform: their products (16 × chunk × tiles) stay near the
// scratch the direct convolution already has (all 384 of conv3 at once
// took 13 MB more at batch 16 for ~3% speed; 64 were ~3% slower).
const winoChunk = 128

// winoStride is the distance (floats) between the 16 transforms' blocks of
// rows×T values: rounded to whole cache lines and made an odd number of
// them. Unpadded, conv4's blocks at batch 8 (384 × 392 floats) were an
// exact multiple of 4 KB apart, the 16 rows a tile writes fell into one
// cache set, and the input transform ran 6× slower than at batch 1.
func winoStride(rows, T int) int {
	s := roundUp(rows*T, 16)
	if (s/16)%2 == 0 {
		s += 16
	}
	return s
}

// winoProductsCap bounds one chunk's products (floats): 2 MB. conv2's 49
// transforms × 128 channels × 81 tiles come to 2 MB per image; with two
// images per pass the whole torchvision batch of 8 took 7.2–7.6 ms per
// image instead of 5.9–6.4 (measured against onnxruntime in one process),
// and all 8 images at once 7.9 with 29 MB more scratch. conv3–5 then take
// five images per pass.
const winoProductsCap = 1 << 19

// winoImagesPerPass is how many of n images share one pass of layer l:
// their transformed inputs within convColCap and one chunk's products
// within winoProductsCap.
func winoImagesPerPass(l *model.Layer, in, out model.Shape3, n int) int {
	k, tiles := winoTransforms(l), winoLayerTiles(l, out)
	byIn := convColCap / (k * in.C / l.Groups * tiles)
	byProducts := winoProductsCap / (k * min(winoChunk, l.Out/l.Groups) * tiles)
	return max(1, min(n, byIn, byProducts))
}

// winoBuffers is the scratch a batch of n needs: transformed inputs (and,
// for a layer that s2dFits, its rearranged input after them), and products
// of one chunk of output channels.
func winoBuffers(l *model.Layer, in, out model.Shape3, n int) (v, m int) {
	if s2dFits(l) {
		f := newS2DForm(l, in, out)
		per := winoImagesPerPass(&f.layer, f.blocks, out, n)
		v, m = winoBuffers(&f.layer, f.blocks, out, per)
		return v + per*f.blocks.Len(), m
	}
	per := winoImagesPerPass(l, in, out, n)
	t := per * winoLayerTiles(l, out)
	k := winoTransforms(l)
	return k * winoStride(in.C/l.Groups, t), k * winoStride(min(winoChunk, l.Out/l.Groups), t)
}

// convForwardWinograd is convForwardBatch for a layer that winogradFits,
// with ww from newWinoWeights and scratch of winoBuffers' sizes.
func convForwardWinograd(l *model.Layer, in, out model.Shape3, n int, x []float32, ww *winoWeights, bias, y, vbuf, mbuf []float32, relu bool) {
	if ww.s2d != nil {
		convForwardS2D(l, in, out, n, x, ww, bias, y, vbuf, mbuf, relu)
		return
	}
	winoConv(l, in, out, n, x, ww, bias, y, vbuf, mbuf, relu)
}

// winoConv runs a 3×3 (pad 1 or 0) or 5×5 layer as Winograd.
func winoConv(l *model.Layer, in, out model.Shape3, n int, x []float32, ww *winoWeights, bias, y, vbuf, mbuf []float32, relu bool) {
	cinG, coutG, k := ww.cinG, ww.coutG, ww.side*ww.side
	il, ol := in.Len(), out.Len()
	hw, p := in.H*in.W, out.H*out.W
	per := winoImagesPerPass(l, in, out, n)
	for j0 := 0; j0 < n; j0 += per {
		nb := min(per, n-j0)
		T := nb * winoLayerTiles(l, out)
		for g := 0; g < l.Groups; g++ {
			xg := x[j0*il+g*cinG*hw:]
			vs := winoStride(cinG, T)
			winoInPar(ww.side, l.Pad, xg, il, nb, in, cinG, vbuf, vs, T)
			u := ww.u[g*k*coutG*cinG:]
			for c0 := 0; c0 < coutG; c0 += winoChunk {
				rows := min(winoChunk, coutG-c0)
				ms := winoStride(rows, T)
				winoGemmsPar(k, u[c0*cinG:], coutG, cinG, vbuf, vs, T, mbuf, ms, rows)
				yg := y[j0*ol+(g*coutG+c0)*p:]
				winoOutPar(ww.side, mbuf, ms, rows, T, nb, out, bias[g*coutG+c0:], relu, yg, ol)
			}
		}
	}
}

// winogradInRef is lw_wino_in (winograd.c) in Go: V[ξ·step+c·T+t] for
// channels [c0, c1) of nb images xs apart, padded by pad (1: "same", 0:
// "valid").
func winogradInRef(x []float32, xs, nb, h, w, pad, c0, c1 int, v []float32, step, T int) {
	th, tw := (h+2*pad-1)/2, (w+2*pad-1)/2
	for c := c0; c < c1; c++ {
		for j := 0; j < nb; j++ {
			plane := x[j*xs+c*h*w:][:h*w]
			for ty := 0; ty < th; ty++ {
				for tx := 0; tx < tw; tx++ {
					var d [16]float32
					var b [4][4]float32
					winoGather(plane, h, w, 2*ty-pad, 2*tx-pad, 4, d[:])
					for s := 0; s < 4; s++ {
						b[0][s] = d[0*4+s] - d[2*4+s]
						b[1][s] = d[1*4+s] + d[2*4+s]
						b[2][s] = d[2*4+s] - d[1*4+s]
						b[3][s] = d[1*4+s] - d[3*4+s]
					}
					at := c*T + j*th*tw + ty*tw + tx
					for r := 0; r < 4; r++ {
						v[at+(r*4+0)*step] = b[r][0] - b[r][2]
						v[at+(r*4+1)*step] = b[r][1] + b[r][2]
						v[at+(r*4+2)*step] = b[r][2] - b[r][1]
						v[at+(r*4+3)*step] = b[r][1] - b[r][3]
					}
				}
			}
		}
	}
}

// winoGather copies the a×a input tile whose corner is (iy0, ix0) of an
// h×w plane into d (row after row), zero outside the plane.
func winoGather(plane []float32, h, w, iy0, ix0, a int, d []float32) {
	for r := 0; r < a; r++ {
		iy := iy0 + r
		for s := 0; s < a; s++ {
			if ix := ix0 + s; iy >= 0 && iy < h && ix >= 0 && ix < w {
				d[r*a+s] = plane[iy*w+ix]
			} else {
				d[r*a+s] = 0
			}
		}
	}
}

// winogradOutRef is lw_wino_out in Go: output channels [co0, co1) of nb
// images (ys apart in y) from M[ξ·step+co·T+t], plus bias, rectified when
// relu is set.
func winogradOutRef(m []float32, step, T, nb, oh, ow int, bias []float32, relu bool, y []float32, ys, co0, co1 int) {
	th, tw := (oh+1)/2, (ow+1)/2
	for co := co0; co < co1; co++ {
		for j := 0; j < nb; j++ {
			out := y[j*ys+co*oh*ow:][:oh*ow]
			for ty := 0; ty < th; ty++ {
				for tx := 0; tx < tw; tx++ {
					at := co*T + j*th*tw + ty*tw + tx
					var a [2][4]float32
					for s := 0; s < 4; s++ {
						m0, m1, m2, m3 := m[at+(0*4+s)*step], m[at+(1*4+s)*step], m[at+(2*4+s)*step], m[at+(3*4+s)*step]
						a[0][s] = m0 + m1 + m2
						a[1][s] = m1 - m2 - m3
					}
					for r := 0; r < 2; r++ {
						oy := 2*ty + r
						if oy >= oh {
							break
						}
						v0 := a[r][0] + a[r][1] + a[r][2] + bias[co]
						v1 := a[r][1] - a[r][2] - a[r][3] + bias[co]
						if relu {
							if v0 < 0 {
								v0 = 0
							}
							if v1 < 0 {
								v1 = 0
							}
						}
						out[oy*ow+2*tx] = v0
						if 2*tx+1 < ow {
							out[oy*ow+2*tx+1] = v1
						}
					}
				}
			}
		}
	}
}

// winoArgs is one piece of a Winograd pass: input channels [c0, c1) to
// transform, transforms ξ in [c0, c1) to multiply, or output channels
// [c0, c1) to transform back.
type winoArgs struct {
	x, v, u, m, bias, y []float32
	xs, ys, nb, T       int
	vs, ms              int // the transforms' strides (winoStride)
	in, out             model.Shape3
	coutG, cinG, rows   int
	side                int // input tile side (4 or 7)
	pad                 int // 1 or 0 for side 4 (see lw_wino_in)
	relu                bool
	c0, c1              int
}

func (a *winoArgs) runIn() {
	if a.side == 7 {
		winograd5In(a.x, a.xs, a.nb, a.in.H, a.in.W, a.c0, a.c1, a.v, a.vs, a.T)
		return
	}
	winogradIn(a.x, a.xs, a.nb, a.in.H, a.in.W, a.pad, a.c0, a.c1, a.v, a.vs, a.T)
}

func (a *winoArgs) runGemms() {
	step := gemmRowStep(a.rows, a.T, a.cinG, blasSmallGEMM())
	for xi := a.c0; xi < a.c1; xi++ {
		u, v, m := a.u[xi*a.coutG*a.cinG:], a.v[xi*a.vs:], a.m[xi*a.ms:]
		for r := 0; r < a.rows; r += step {
			sgemm(false, false, min(step, a.rows-r), a.T, a.cinG, 1, u[r*a.cinG:], a.cinG, v, a.T, 0, m[r*a.T:], a.T)
		}
	}
}

// gemmRowStep is how many rows of an m×n×k product go to one GEMM call:
// all of them, or the fewest even blocks (multiples of 8 rows) whose
// products fit the BLAS's small-matrix kernels (small: their largest
// m·n·k, 0 for none); larger blocks ran faster there than smaller ones.
// Blocks under 8 rows would hand the kernels slivers: no split then.
func gemmRowStep(m, n, k, small int) int {
	if small == 0 || m*n*k <= small {
		return m
	}
	most := small / (n * k) / 8 * 8
	if most < 8 {
		return m
	}
	blocks := (m + most - 1) / most
	return roundUp((m+blocks-1)/blocks, 8)
}

func (a *winoArgs) runOut() {
	if a.side == 7 {
		winograd5Out(a.m, a.ms, a.T, a.nb, a.out.H, a.out.W, a.bias, a.relu, a.y, a.ys, a.c0, a.c1)
		return
	}
	winogradOut(a.m, a.ms, a.T, a.nb, a.out.H, a.out.W, a.bias, a.relu, a.y, a.ys, a.c0, a.c1)
}

// splitWino runs kind over [0, total) in one piece per core.
func splitWino(kind pieceKind, a winoArgs, total int) {
	w := min(workers(), maxPieces, total)
	var buf [maxPieces]piece
	pieces := buf[:0]
	step := (total + w - 1) / w
	for c := 0; c < total; c += step {
		b := a
		b.c0, b.c1 = c, min(total, c+step)
		pieces = append(pieces, piece{kind: kind, wino: b})
	}
	runPieces(pieces)
}

func winoInPar(side, pad int, x []float32, xs, nb int, in model.Shape3, cinG int, v []float32, vs, T int) {
	splitWino(pieceWinoIn, winoArgs{side: side, pad: pad, x: x, xs: xs, nb: nb, in: in, cinG: cinG, v: v, vs: vs, T: T}, cinG)
}

func winoGemmsPar(k int, u []float32, coutG, cinG int, v []float32, vs, T int, m []float32, ms, rows int) {
	splitWino(pieceWinoGemms, winoArgs{u: u, coutG: coutG, cinG: cinG, v: v, vs: vs, T: T, m: m, ms: ms, rows: rows}, k)
}

func winoOutPar(side int, m []float32, ms, rows, T, nb int, out model.Shape3, bias []float32, relu bool, y []float32, ys int) {
	splitWino(pieceWinoOut, winoArgs{side: side, m: m, ms: ms, rows: rows, T: T, nb: nb, out: out, bias: bias, relu: relu, y: y, ys: ys}, rows)
}
