//go:build cgo && !purego

package cpu

// #cgo CFLAGS: -O3 -Wno-psabi
// #include <stdint.h>
// void lw_fc(const void *w, int kind, const float *scale, const float *x, const float *bias, float *y,
//            int n, int in, int out, int o0, int o1);
// int lw_fc_width(int lanes, const void *w, int kind, const float *scale, const float *x, const float *bias,
//                 float *y, int n, int in, int out, int o0, int o1);
import "C"

import "github.com/leafwatch/leafwatch/model"

import "unsafe"

// streamFP32 says the fp32 FC layers use the streaming C kernel too (it
// reads the weights once per batch of eight; OpenBLAS's GEMM did not).
const streamFP32 = true

// fcQuantized computes rows [o0, o1) of a streaming FC (C kernel, the
// widest vector family this CPU runs).
func fcQuantized(q *qfc, n int, x, bias, y []float32, o0, o1 int) {
	fcLanes(0, q, n, x, bias, y, o0, o1)
}

// fcLanes runs the family with the given vector width (16, 8, 4 lanes;
// 0: the widest this CPU runs) and reports whether this CPU has it.
func fcLanes(lanes int, q *qfc, n int, x, bias, y []float32, o0, o1 int) bool {
	_, _, _ = x[n*q.in-1], y[n*q.out-1], bias[q.out-1]
	var w unsafe.Pointer
	var scale *C.float
	var kind C.int
	switch q.prec {
	case model.FP32:
		w, kind = unsafe.Pointer(&q.f32[0]), 0
	case model.BF16:
		w, kind = unsafe.Pointer(&q.h[0]), 1
	case model.INT8:
		w, kind, scale = unsafe.Pointer(&q.i8[0]), 2, (*C.float)(&q.scale[0])
	case model.FP16:
		w, kind, scale = unsafe.Pointer(&q.h[0]), 3, (*C.float)(&q.scale[0])
	}
	px, pb, py := (*C.float)(&x[0]), (*C.float)(&bias[0]), (*C.float)(&y[0])
	if lanes == 0 {
		C.lw_fc(w, kind, scale, px, pb, py, C.int(n), C.int(q.in), C.int(q.out), C.int(o0), C.int(o1))
		return true
	}
	return C.lw_fc_width(C.int(lanes), w, kind, scale, px, pb, py, C.int(n), C.int(q.in), C.int(q.out), C.int(o0), C.int(o1)) == 1
}
