//go:build cgo && !purego

package cpu

// #cgo CFLAGS: -O3
// #cgo LDFLAGS: -lm
// #include <stddef.h>
// void lw_bias_act(const float *x, size_t ldx, float *y, size_t ldy, const float *bias, int rows, int p, int relu);
// void lw_maxpool(const float *x, float *y, int h, int w, int oh, int ow, int k, int st, int pad, int c0, int c1);
// void lw_im2col_rows(const float *x, int h, int w, int c0, int k, int stride, int pad, int oh, int ow, float *col,
//                     size_t ld, int g0, int g1);
// void lw_wino_in(const float *x, size_t xs, int nb, int h, int w, int pad, int c0, int c1, float *V, size_t step,
//                 int T);
// void lw_wino_out(const float *M, size_t step, int T, int nb, int oh, int ow, const float *bias, int relu, float *y,
//                  size_t ys, int co0, int co1);
// void lw_wino5_in(const float *x, size_t xs, int nb, int h, int w, int c0, int c1, float *V, size_t step, int T);
// void lw_wino5_out(const float *M, size_t step, int T, int nb, int oh, int ow, const float *bias, int relu, float *y,
//                   size_t ys, int co0, int co1);
// void lw_lrn(const float *x, float *y, int C, int hw, int p0, int p1, int size, float alpha, float beta, float bias);
import "C"

import "github.com/leafwatch/leafwatch/model"

// biasAct writes rows of p values from x (ldx apart) plus their channel's
// bias into y (ldy apart), rectified when relu is set.
func biasAct(x []float32, ldx int, y []float32, ldy int, bias []float32, rows, p int, relu bool) {
	_, _, _ = x[(rows-1)*ldx+p-1], y[(rows-1)*ldy+p-1], bias[rows-1] // the C code trusts these bounds
	r := C.int(0)
	if relu {
		r = 1
	}
	C.lw_bias_act((*C.float)(&x[0]), C.size_t(ldx), (*C.float)(&y[0]), C.size_t(ldy), (*C.float)(&bias[0]), C.int(rows), C.int(p), r)
}

// maxPoolInfer pools channels [c0, c1) of one image (no argmax).
func maxPoolInfer(l *model.Layer, in, out model.Shape3, x, y []float32, c0, c1 int) {
	_, _ = x[in.Len()-1], y[out.Len()-1]
	C.lw_maxpool((*C.float)(&x[0]), (*C.float)(&y[0]), C.int(in.H), C.int(in.W), C.int(out.H), C.int(out.W),
		C.int(l.Kernel), C.int(l.Stride), C.int(l.Pad), C.int(c0), C.int(c1))
}

// lrnInfer normalises pixels [p0, p1) of one image across channels (no
// saved scale).
func lrnInfer(l *model.Layer, in model.Shape3, x, y []float32, p0, p1 int) {
	_, _ = x[in.Len()-1], y[in.Len()-1]
	if p0 < 0 || p0 > p1 || p1 > in.H*in.W {
		panic("lrnInfer: pixel range out of the image")
	}
	C.lw_lrn((*C.float)(&x[0]), (*C.float)(&y[0]), C.int(in.C), C.int(in.H*in.W), C.int(p0), C.int(p1), C.int(l.Size),
		C.float(l.Alpha), C.float(l.Beta), C.float(l.Bias))
}

// im2colFast is im2colRows in C (the kernel rows [g0, g1) of channels from
// c0 on).
func im2colFast(x []float32, h, w, c0, k, stride, pad, oh, ow int, col []float32, ld int, g0, g1 int) {
	if g0 >= g1 {
		return
	}
	if k > 64 { // lw_im2col_rows' LW_IM2COL_MAXK; AlexNet's largest kernel is 11
		im2colRows(x, h, w, c0, k, stride, pad, oh, ow, col, ld, g0, g1)
		return
	}
	_, _ = x[(c0+(g1-1)/k+1)*h*w-1], col[(g1*k-1)*ld+oh*ow-1]
	C.lw_im2col_rows((*C.float)(&x[0]), C.int(h), C.int(w), C.int(c0), C.int(k), C.int(stride), C.int(pad),
		C.int(oh), C.int(ow), (*C.float)(&col[0]), C.size_t(ld), C.int(g0), C.int(g1))
}

// winogradIn is winogradInRef in C (winograd.c).
func winogradIn(x []float32, xs, nb, h, w, pad, c0, c1 int, v []float32, step, T int) {
	if c0 >= c1 {
		return
	}
	if pad != 0 && pad != 1 {
		panic("winogradIn: pad must be 0 or 1")
	}
	_, _ = x[(nb-1)*xs+c1*h*w-1], v[15*step+(c1-1)*T+nb*winoTiles(h+2*pad-2, w+2*pad-2)-1] // the C code trusts these bounds
	C.lw_wino_in((*C.float)(&x[0]), C.size_t(xs), C.int(nb), C.int(h), C.int(w), C.int(pad), C.int(c0), C.int(c1),
		(*C.float)(&v[0]), C.size_t(step), C.int(T))
}

// winogradOut is winogradOutRef in C (winograd.c).
func winogradOut(m []float32, step, T, nb, oh, ow int, bias []float32, relu bool, y []float32, ys, co0, co1 int) {
	if co0 >= co1 {
		return
	}
	_, _, _ = m[15*step+(co1-1)*T+nb*winoTiles(oh, ow)-1], y[(nb-1)*ys+co1*oh*ow-1], bias[co1-1]
	r := C.int(0)
	if relu {
		r = 1
	}
	C.lw_wino_out((*C.float)(&m[0]), C.size_t(step), C.int(T), C.int(nb), C.int(oh), C.int(ow), (*C.float)(&bias[0]), r,
		(*C.float)(&y[0]), C.size_t(ys), C.int(co0), C.int(co1))
}

// winograd5In is winograd5InRef in C (winograd.c).
func winograd5In(x []float32, xs, nb, h, w, c0, c1 int, v []float32, step, T int) {
	if c0 >= c1 {
		return
	}
	_, _ = x[(nb-1)*xs+c1*h*w-1], v[48*step+(c1-1)*T+nb*winoTilesM(h, w, 3)-1]
	C.lw_wino5_in((*C.float)(&x[0]), C.size_t(xs), C.int(nb), C.int(h), C.int(w), C.int(c0), C.int(c1),
		(*C.float)(&v[0]), C.size_t(step), C.int(T))
}

// winograd5Out is winograd5OutRef in C (winograd.c).
func winograd5Out(m []float32, step, T, nb, oh, ow int, bias []float32, relu bool, y []float32, ys, co0, co1 int) {
	if co0 >= co1 {
		return
	}
	_, _, _ = m[48*step+(co1-1)*T+nb*winoTilesM(oh, ow, 3)-1], y[(nb-1)*ys+co1*oh*ow-1], bias[co1-1]
	r := C.int(0)
	if relu {
		r = 1
	}
	C.lw_wino5_out((*C.float)(&m[0]), C.size_t(step), C.int(T), C.int(nb), C.int(oh), C.int(ow), (*C.float)(&bias[0]), r,
		(*C.float)(&y[0]), C.size_t(ys), C.int(co0), C.int(co1))
}
