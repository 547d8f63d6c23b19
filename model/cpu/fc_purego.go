//go:build !cgo || purego

package cpu

// streamFP32 is false: without C kernels the fp32 FC layers stay on the
// (pure Go) BLAS, faster than the scalar reference.
const streamFP32 = false

// fcQuantized computes rows [o0, o1) of a reduced-precision FC (the
// scalar reference: builds without cgo have no C kernels).
func fcQuantized(q *qfc, n int, x, bias, y []float32, o0, o1 int) {
	fcForwardQRef(q, n, x, bias, y, o0, o1)
}

// fcLanes: there are no vector families without cgo (lanes 0 is the
// reference).
func fcLanes(lanes int, q *qfc, n int, x, bias, y []float32, o0, o1 int) bool {
	if lanes != 0 {
		return false
	}
	fcForwardQRef(q, n, x, bias, y, o0, o1)
	return true
}
