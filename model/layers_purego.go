//go:build !cgo || purego

package model

// biasAct writes rows of p values from x (ldx apart) plus their channel's
// bias into y (ldy apart), rectified when relu is set.
func biasAct(x []float32, ldx int, y []float32, ldy int, bias []float32, rows, p int, relu bool) {
	biasActRef(x, ldx, y, ldy, bias, rows, p, relu)
}

// maxPoolInfer pools channels [c0, c1) of one image (no argmax).
func maxPoolInfer(l *Layer, in, out Shape3, x, y []float32, c0, c1 int) {
	maxPoolChannels(l, in, out, x, y, nil, c0, c1)
}

// lrnInfer normalises one image across channels (no saved scale).
func lrnInfer(l *Layer, in Shape3, x, y []float32) { lrnForward(l, in, x, y, nil) }
