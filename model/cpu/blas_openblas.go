//go:build cgo && !purego

package cpu

// #cgo LDFLAGS: -lopenblas
// #include <cblas.h>
import "C"

import (
	"sync"
	"unsafe"
)

// blasName says which GEMM backs the engine, for logs and benchmarks.
const blasName = "openblas"

// sgemm computes C = alpha*op(A)*op(B) + beta*C on row-major matrices.
// OpenBLAS is called directly rather than through gonum/netlib so that a
// plain `go build` links it without CGO_LDFLAGS in the environment.
func sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	ta, tb := C.enum_CBLAS_TRANSPOSE(C.CblasNoTrans), C.enum_CBLAS_TRANSPOSE(C.CblasNoTrans)
	if transA {
		ta = C.CblasTrans
	}
	if transB {
		tb = C.CblasTrans
	}
	C.cblas_sgemm(C.CblasRowMajor, ta, tb, C.blasint(m), C.blasint(n), C.blasint(k),
		C.float(alpha), (*C.float)(unsafe.Pointer(&a[0])), C.blasint(lda),
		(*C.float)(unsafe.Pointer(&b[0])), C.blasint(ldb),
		C.float(beta), (*C.float)(unsafe.Pointer(&c[0])), C.blasint(ldc))
}

// sgemv computes y = alpha*A*x + beta*y for a row-major m×n matrix A.
func sgemv(m, n int, alpha float32, a []float32, x []float32, beta float32, y []float32) {
	C.cblas_sgemv(C.CblasRowMajor, C.CblasNoTrans, C.blasint(m), C.blasint(n), C.float(alpha),
		(*C.float)(unsafe.Pointer(&a[0])), C.blasint(n), (*C.float)(unsafe.Pointer(&x[0])), 1,
		C.float(beta), (*C.float)(unsafe.Pointer(&y[0])), 1)
}

// blasSingleThread keeps OpenBLAS in the calling thread; the engine splits
// the work itself (parallel.go).
func blasSingleThread() { C.openblas_set_num_threads(1) }

// blasSmallGEMM is the largest m·n·k that OpenBLAS multiplies with its
// small-matrix kernels, which read A and B in place instead of packing
// them: OpenBLAS has them for its AVX-512 cores (SkylakeX and the cores
// built on it) up to 100³ (bookworm's 0.3.21, measured: a product of 0.9
// million ran on them, one of 1.2 million did not). A Winograd product at batch 1 (128 × 49 ×
// 192 and up) just misses it; split into row blocks under it, one thread
// on this Zen 4 (Cooperlake kernels) ran 87 → 106 GFLOP/s warm and 56 →
// 67 with the filters cold. 0 where the kernels are absent or unmeasured:
// there, splitting only adds calls. A variable so tests can force either.
var blasSmallGEMM = sync.OnceValue(func() int { return smallGEMMFor(blasCoreName()) })

// smallGEMMFor is blasSmallGEMM for an OpenBLAS kernel name: the choice
// follows the kernel OpenBLAS runs (which TuneBLAS chose by the CPU's
// features), not the machine it was measured on.
func smallGEMMFor(core string) int {
	switch core {
	case "SkylakeX", "Cooperlake", "SapphireRapids":
		return 100 * 100 * 100
	}
	return 0
}

// BLASInfo describes the GEMM in use: the library and, for OpenBLAS, the
// CPU kernel it selected at load time.
func BLASInfo() string {
	return blasName + " core=" + C.GoString(C.openblas_get_corename())
}

// BLASCoreIsGeneric reports whether OpenBLAS fell back to a generic SSE3
// kernel: OpenBLAS 0.3.21 (Debian bookworm) does not recognise some recent
// Xeons and picks "Prescott", 3–6× slower than the AVX-512 kernels. The
// programs log a hint to set OPENBLAS_CORETYPE in that case.
func BLASCoreIsGeneric() bool { return genericCores[blasCoreName()] }

// blasCoreName is the kernel OpenBLAS selected at load time.
func blasCoreName() string { return C.GoString(C.openblas_get_corename()) }
