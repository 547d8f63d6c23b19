package cpu

import (
	"math"

	"github.com/leafwatch/leafwatch/model"
)

// The kernels below work on one image at a time in NCHW layout. They write
// into caller-owned buffers so that a planned run allocates nothing.

// im2col unrolls the channels [c0, c0+cin) of x (C×H×W) into col, a
// (cin·k·k) × (oh·ow) row-major matrix with row stride ld (≥ oh·ow: a
// batch's images sit side by side), zero-filling the padding.
func im2col(x []float32, h, w, c0, cin, k, stride, pad, oh, ow int, col []float32, ld int) {
	im2colRows(x, h, w, c0, k, stride, pad, oh, ow, col, ld, 0, cin*k)
}

// im2colRows unrolls the kernel rows [g0, g1) of channels from c0 on, a
// kernel row g being channel c0+g/k at offset ky = g%k: the k rows of col it
// fills start at row g·k (so pieces of one matrix can be filled in parallel).
func im2colRows(x []float32, h, w, c0, k, stride, pad, oh, ow int, col []float32, ld int, g0, g1 int) {
	p := oh * ow
	row := g0 * k
	for g := g0; g < g1; g++ {
		c, ky := c0+g/k, g%k
		plane := x[c*h*w : (c+1)*h*w]
		for kx := 0; kx < k; kx++ {
			dst := col[row*ld : row*ld+p]
			row++
			i := 0
			for oy := 0; oy < oh; oy++ {
				iy := oy*stride - pad + ky
				if iy < 0 || iy >= h {
					clear(dst[i : i+ow])
					i += ow
					continue
				}
				src := plane[iy*w : (iy+1)*w]
				ix := kx - pad
				if stride == 1 && ix >= 0 && ix+ow <= w {
					copy(dst[i:i+ow], src[ix:ix+ow])
					i += ow
					continue
				}
				for ox := 0; ox < ow; ox++ {
					if ix >= 0 && ix < w {
						dst[i] = src[ix]
					} else {
						dst[i] = 0
					}
					ix += stride
					i++
				}
			}
		}
	}
}

// col2im is the adjoint of im2col: it adds col back into dx.
func col2im(col []float32, h, w, c0, cin, k, stride, pad, oh, ow int, dx []float32) {
	p := oh * ow
	row := 0
	for c := c0; c < c0+cin; c++ {
		plane := dx[c*h*w : (c+1)*h*w]
		for ky := 0; ky < k; ky++ {
			for kx := 0; kx < k; kx++ {
				src := col[row*p : (row+1)*p]
				row++
				i := 0
				for oy := 0; oy < oh; oy++ {
					iy := oy*stride - pad + ky
					if iy < 0 || iy >= h {
						i += ow
						continue
					}
					dst := plane[iy*w : (iy+1)*w]
					ix := kx - pad
					for ox := 0; ox < ow; ox++ {
						if ix >= 0 && ix < w {
							dst[ix] += src[i]
						}
						ix += stride
						i++
					}
				}
			}
		}
	}
}

// convForward computes one image's (grouped) convolution plus bias: the
// reference the batched, parallel convForwardBatch is tested against.
func convForward(l *model.Layer, in, out model.Shape3, x, wt, bias, y, col []float32) {
	cinG, coutG := in.C/l.Groups, l.Out/l.Groups
	kk := cinG * l.Kernel * l.Kernel
	p := out.H * out.W
	for g := 0; g < l.Groups; g++ {
		im2col(x, in.H, in.W, g*cinG, cinG, l.Kernel, l.Stride, l.Pad, out.H, out.W, col, p)
		yg := y[g*coutG*p : (g+1)*coutG*p]
		for o := 0; o < coutG; o++ {
			b := bias[g*coutG+o]
			row := yg[o*p : (o+1)*p]
			for i := range row {
				row[i] = b
			}
		}
		sgemm(false, false, coutG, p, kk, 1, wt[g*coutG*kk:], kk, col, p, 1, yg, p)
	}
}

// convBackward accumulates dW and dB for one image and, when dx is not
// nil, writes the input gradient (dx is overwritten, not accumulated).
func convBackward(l *model.Layer, in, out model.Shape3, x, wt, dy, dW, dB, dx, col []float32) {
	cinG, coutG := in.C/l.Groups, l.Out/l.Groups
	kk := cinG * l.Kernel * l.Kernel
	p := out.H * out.W
	if dx != nil {
		clear(dx[:in.Len()])
	}
	for g := 0; g < l.Groups; g++ {
		dyg := dy[g*coutG*p : (g+1)*coutG*p]
		for o := 0; o < coutG; o++ {
			var s float32
			for _, v := range dyg[o*p : (o+1)*p] {
				s += v
			}
			dB[g*coutG+o] += s
		}
		// The C unrolling (tested against im2colRows): training a
		// convolution unrolls every image again here.
		im2colFast(x, in.H, in.W, g*cinG, l.Kernel, l.Stride, l.Pad, out.H, out.W, col, p, 0, cinG*l.Kernel)
		sgemmPar(false, true, coutG, kk, p, 1, dyg, p, col, p, 1, dW[g*coutG*kk:], kk)
		if dx != nil {
			sgemmPar(true, false, kk, p, coutG, 1, wt[g*coutG*kk:], kk, dyg, p, 0, col, p)
			col2im(col, in.H, in.W, g*cinG, cinG, l.Kernel, l.Stride, l.Pad, out.H, out.W, dx)
		}
	}
}

// maxPoolForward pools one image; argmax (may be nil) records the winning
// input index of every output for the backward pass.
func maxPoolForward(l *model.Layer, in, out model.Shape3, x, y []float32, argmax []int32) {
	maxPoolChannels(l, in, out, x, y, argmax, 0, in.C)
}

// maxPoolChannels pools channels [c0, c1) of one image.
func maxPoolChannels(l *model.Layer, in, out model.Shape3, x, y []float32, argmax []int32, c0, c1 int) {
	for c := c0; c < c1; c++ {
		plane := x[c*in.H*in.W:]
		for oy := 0; oy < out.H; oy++ {
			y0 := oy*l.Stride - l.Pad
			y1 := min(y0+l.Kernel, in.H)
			y0 = max(y0, 0)
			for ox := 0; ox < out.W; ox++ {
				x0 := ox*l.Stride - l.Pad
				x1 := min(x0+l.Kernel, in.W)
				x0 = max(x0, 0)
				best := float32(math.Inf(-1))
				bi := -1
				for iy := y0; iy < y1; iy++ {
					for ix := x0; ix < x1; ix++ {
						if v := plane[iy*in.W+ix]; v > best || bi < 0 {
							best, bi = v, iy*in.W+ix
						}
					}
				}
				o := (c*out.H+oy)*out.W + ox
				y[o] = best
				if argmax != nil {
					argmax[o] = int32(c*in.H*in.W + bi)
				}
			}
		}
	}
}

func maxPoolBackward(out model.Shape3, inLen int, dy, dx []float32, argmax []int32) {
	clear(dx[:inLen])
	for o := 0; o < out.Len(); o++ {
		dx[argmax[o]] += dy[o]
	}
}

// lrnWindow returns the channel range summed for channel c, as ONNX,
// Caffe and PyTorch define it.
func lrnWindow(c, size, channels int) (int, int) {
	lo := c - (size-1)/2
	hi := c + size/2
	return max(lo, 0), min(hi, channels-1)
}

// lrnForward normalises across channels; scale (may be nil) keeps
// Bias + Alpha/Size·Σx² for the backward pass.
func lrnForward(l *model.Layer, in model.Shape3, x, y, scale []float32) {
	lrnPixels(l, in, x, y, scale, 0, in.H*in.W)
}

// lrnPixels is lrnForward for pixels [p0, p1) of every channel.
func lrnPixels(l *model.Layer, in model.Shape3, x, y, scale []float32, p0, p1 int) {
	hw := in.H * in.W
	a := l.Alpha / float32(l.Size)
	for c := 0; c < in.C; c++ {
		lo, hi := lrnWindow(c, l.Size, in.C)
		for i := p0; i < p1; i++ {
			var s float32
			for cc := lo; cc <= hi; cc++ {
				v := x[cc*hw+i]
				s += v * v
			}
			sc := l.Bias + a*s
			if scale != nil {
				scale[c*hw+i] = sc
			}
			y[c*hw+i] = x[c*hw+i] * powNegBeta(sc, l.Beta)
		}
	}
}

// lrnBackward: dx_c = dy_c·s_c^-β − 2αβ/n · x_c · Σ_{j: c∈win(j)} dy_j·y_j/s_j.
func lrnBackward(l *model.Layer, in model.Shape3, x, y, scale, dy, dx []float32) {
	hw := in.H * in.W
	coef := 2 * l.Alpha * l.Beta / float32(l.Size)
	for c := 0; c < in.C; c++ {
		// Channels j whose window contains c: j-lo(j)... symmetric for odd sizes.
		jlo := c - l.Size/2
		jhi := c + (l.Size-1)/2
		jlo, jhi = max(jlo, 0), min(jhi, in.C-1)
		for i := 0; i < hw; i++ {
			var acc float32
			for j := jlo; j <= jhi; j++ {
				acc += dy[j*hw+i] * y[j*hw+i] / scale[j*hw+i]
			}
			k := c*hw + i
			dx[k] = dy[k]*powNegBeta(scale[k], l.Beta) - coef*x[k]*acc
		}
	}
}

// powNegBeta is s^-β; AlexNet's β = 0.75 takes a square-root path that is
// far cheaper than Pow: s^-0.75 = 1/(√s·√√s).
func powNegBeta(s, beta float32) float32 {
	if beta == 0.75 {
		r := float32(math.Sqrt(float64(s)))
		return 1 / (r * float32(math.Sqrt(float64(r))))
	}
	return float32(math.Pow(float64(s), -float64(beta)))
}

func reluForward(x []float32) {
	for i, v := range x {
		if v < 0 {
			x[i] = 0
		}
	}
}

// reluBackward masks dy in place by the (already rectified) output y.
func reluBackward(y, dy []float32) {
	for i, v := range y {
		if v <= 0 {
			dy[i] = 0
		}
	}
}

// fcForward computes Y (n×out) = X (n×in)·Wᵀ + b.
func fcForward(n, inLen, out int, x, wt, bias, y []float32) {
	for i := 0; i < n; i++ {
		copy(y[i*out:(i+1)*out], bias)
	}
	if n == 1 {
		// One image: a matrix-vector product, memory-bound on the weights;
		// GEMV streams them once where GEMM with M=1 wastes its blocking.
		sgemvPar(out, inLen, 1, wt, x, 1, y)
		return
	}
	sgemmPar(false, true, n, out, inLen, 1, x, inLen, wt, inLen, 1, y, out)
}

// fcBackward accumulates dW, dB and writes dX when dx is not nil.
func fcBackward(n, inLen, out int, x, wt, dy, dW, dB, dx []float32) {
	for i := 0; i < n; i++ {
		for o, v := range dy[i*out : (i+1)*out] {
			dB[o] += v
		}
	}
	sgemmPar(true, false, out, inLen, n, 1, dy, out, x, inLen, 1, dW, inLen)
	if dx != nil {
		sgemmPar(false, false, n, inLen, out, 1, dy, out, wt, inLen, 0, dx, inLen)
	}
}

// softmax turns each row of logits into probabilities in place, in
// float64 accumulation so near-ties stay ordered.
func softmax(n, classes int, z []float32) {
	for i := 0; i < n; i++ {
		row := z[i*classes : (i+1)*classes]
		m := row[0]
		for _, v := range row {
			m = max(m, v)
		}
		var s float64
		for j, v := range row {
			e := math.Exp(float64(v - m))
			row[j] = float32(e)
			s += e
		}
		inv := 1 / s
		for j := range row {
			row[j] = float32(float64(row[j]) * inv)
		}
	}
}

// biasActRef is the reference of biasAct (layers.c).
func biasActRef(x []float32, ldx int, y []float32, ldy int, bias []float32, rows, p int, relu bool) {
	for c := 0; c < rows; c++ {
		s, d, b := x[c*ldx:c*ldx+p], y[c*ldy:c*ldy+p], bias[c]
		for i, v := range s {
			d[i] = v + b
		}
		if relu {
			reluForward(d)
		}
	}
}
