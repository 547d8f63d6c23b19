//go:build !cgo || purego

package cpu

import "github.com/leafwatch/leafwatch/model"

// biasAct writes rows of p values from x (ldx apart) plus their channel's
// bias into y (ldy apart), rectified when relu is set.
func biasAct(x []float32, ldx int, y []float32, ldy int, bias []float32, rows, p int, relu bool) {
	biasActRef(x, ldx, y, ldy, bias, rows, p, relu)
}

// maxPoolInfer pools channels [c0, c1) of one image (no argmax).
func maxPoolInfer(l *model.Layer, in, out model.Shape3, x, y []float32, c0, c1 int) {
	maxPoolChannels(l, in, out, x, y, nil, c0, c1)
}

// lrnInfer normalises pixels [p0, p1) of one image across channels (no
// saved scale).
func lrnInfer(l *model.Layer, in model.Shape3, x, y []float32, p0, p1 int) {
	lrnPixels(l, in, x, y, nil, p0, p1)
}

// im2colFast is im2colRows (the kernel rows [g0, g1) of channels from c0 on).
func im2colFast(x []float32, h, w, c0, k, stride, pad, oh, ow int, col []float32, ld int, g0, g1 int) {
	im2colRows(x, h, w, c0, k, stride, pad, oh, ow, col, ld, g0, g1)
}

// winogradIn is winogradInRef (no C without cgo).
func winogradIn(x []float32, xs, nb, h, w, pad, c0, c1 int, v []float32, step, T int) {
	winogradInRef(x, xs, nb, h, w, pad, c0, c1, v, step, T)
}

// winogradOut is winogradOutRef (no C without cgo).
func winogradOut(m []float32, step, T, nb, oh, ow int, bias []float32, relu bool, y []float32, ys, co0, co1 int) {
	winogradOutRef(m, step, T, nb, oh, ow, bias, relu, y, ys, co0, co1)
}

// winograd5In is winograd5InRef (no C without cgo).
func winograd5In(x []float32, xs, nb, h, w, c0, c1 int, v []float32, step, T int) {
	winograd5InRef(x, xs, nb, h, w, c0, c1, v, step, T)
}

// winograd5Out is winograd5OutRef (no C without cgo).
func winograd5Out(m []float32, step, T, nb, oh, ow int, bias []float32, relu bool, y []float32, ys, co0, co1 int) {
	winograd5OutRef(m, step, T, nb, oh, ow, bias, relu, y, ys, co0, co1)
}
