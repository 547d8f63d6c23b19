//go:build cgo && !purego

package model

// #cgo CFLAGS: -O3
// #include <stdint.h>
// void lw_fc_q(const void *w, int is_i8, const float *scale, const float *x, const float *bias, float *y,
//              int n, int in, int out, int o0, int o1);
import "C"

import "unsafe"

// fcQuantized computes rows [o0, o1) of the reduced-precision FC (C kernel).
func fcQuantized(q *qfc, n int, x, bias, y []float32, o0, o1 int) {
	var w unsafe.Pointer
	var scale *C.float
	isI8 := C.int(0)
	if q.i8 != nil {
		w, isI8, scale = unsafe.Pointer(&q.i8[0]), 1, (*C.float)(&q.scale[0])
	} else {
		w = unsafe.Pointer(&q.bf[0])
	}
	C.lw_fc_q(w, isI8, scale, (*C.float)(&x[0]), (*C.float)(&bias[0]), (*C.float)(&y[0]),
		C.int(n), C.int(q.in), C.int(q.out), C.int(o0), C.int(o1))
}
