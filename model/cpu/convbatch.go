package cpu

import "github.com/leafwatch/leafwatch/model"

// convColCap bounds the column buffer of a batched convolution (floats):
// 16 MB.
const convColCap = 1 << 22

// convWideEnough is the GEMM width (columns) past which more images in one
// GEMM stop helping: conv1's 3,025 columns per image ran at 168 GFLOP/s
// alone and 123 GFLOP/s three at a time (its 64-row weight panel is
// re-read across a column block that no longer fits the cache), while the
// 13×13 layers' 169 columns per image need several images to fill a GEMM.
const convWideEnough = 2048

// convImagesPerPass is how many of n images share one GEMM in layer l.
func convImagesPerPass(l *model.Layer, in, out model.Shape3, n int) int {
	kk := in.C / l.Groups * l.Kernel * l.Kernel
	p := out.H * out.W
	return max(1, min(n, convColCap/(kk*p), (convWideEnough+p-1)/p))
}

// convBuffers is the column and output scratch a batch of n needs.
func convBuffers(l *model.Layer, in, out model.Shape3, n int) (col, tmp int) {
	per := convImagesPerPass(l, in, out, n)
	p := out.H * out.W
	return in.C / l.Groups * l.Kernel * l.Kernel * p * per, l.Out / l.Groups * p * per
}

// convForwardBatch computes the (grouped) convolution plus bias of n
// images, rectified when relu is set (the ReLU that follows every
// convolution, fused): per group, the columns of several images side by
// side in one matrix (unrolled in parallel), one GEMM split over the
// cores, and the result scattered back to NCHW with the bias — or, for one
// image, the GEMM writes straight into the output. convForward is its
// reference.
func convForwardBatch(l *model.Layer, in, out model.Shape3, n int, x, wt, bias, y, col, tmp []float32, relu bool) {
	cinG, coutG := in.C/l.Groups, l.Out/l.Groups
	kk := cinG * l.Kernel * l.Kernel
	p := out.H * out.W
	il, ol := in.Len(), out.Len()
	per := convImagesPerPass(l, in, out, n)
	for j0 := 0; j0 < n; j0 += per {
		nb := min(per, n-j0)
		ld := nb * p
		for g := 0; g < l.Groups; g++ {
			im2colPar(x[j0*il:], il, in, l, g*cinG, cinG, out, nb, col, ld)
			wg, bg := wt[g*coutG*kk:], bias[g*coutG:]
			if nb == 1 {
				yg := y[j0*ol+g*coutG*p:]
				sgemmPar(false, false, coutG, p, kk, 1, wg, kk, col, p, 0, yg, p)
				biasAct(yg, p, yg, p, bg, coutG, p, relu)
				continue
			}
			sgemmPar(false, false, coutG, ld, kk, 1, wg, kk, col, ld, 0, tmp, ld)
			for j := 0; j < nb; j++ {
				biasAct(tmp[j*p:], ld, y[(j0+j)*ol+g*coutG*p:], p, bg, coutG, p, relu)
			}
		}
	}
}

// im2colPar unrolls nb images (x holds them il floats apart) side by side
// into col (row stride ld), split over the cores: by images, or by kernel
// rows when there are fewer images than cores.
func im2colPar(x []float32, il int, in model.Shape3, l *model.Layer, c0, cin int, out model.Shape3, nb int, col []float32, ld int) {
	w := min(workers(), maxPieces)
	p := out.H * out.W
	var buf [maxPieces]piece
	pieces := buf[:0]
	args := im2colArgs{h: in.H, w: in.W, k: l.Kernel, stride: l.Stride, pad: l.Pad, oh: out.H, ow: out.W, ld: ld, xStride: il, colStride: p}
	if nb >= w {
		step := (nb + w - 1) / w
		for j := 0; j < nb; j += step {
			a := args
			a.x, a.c0, a.g0, a.g1, a.col, a.count = x[j*il:], c0, 0, cin*l.Kernel, col[j*p:], min(step, nb-j)
			pieces = append(pieces, piece{kind: pieceIm2col, i2c: a})
		}
	} else { // by kernel rows: conv1 has only 3 channels but 33 of them
		rows := cin * l.Kernel
		step := (rows + w - 1) / w
		for g := 0; g < rows; g += step {
			a := args
			a.x, a.c0, a.g0, a.g1, a.col, a.count = x, c0, g, min(rows, g+step), col, nb
			pieces = append(pieces, piece{kind: pieceIm2col, i2c: a})
		}
	}
	runPieces(pieces)
}
