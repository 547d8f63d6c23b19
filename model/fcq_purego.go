//go:build !cgo || purego

package model

// fcQuantized computes rows [o0, o1) of the reduced-precision FC (the
// scalar reference: builds without cgo have no C kernels).
func fcQuantized(q *qfc, n int, x, bias, y []float32, o0, o1 int) {
	fcForwardQRef(q, n, x, bias, y, o0, o1)
}
