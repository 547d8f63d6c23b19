//go:build !cgo || purego

package cpu

import (
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

// blasName says which GEMM backs the engine, for logs and benchmarks.
const blasName = "gonum (pure Go)"

var gonumBLAS gonum.Implementation

// sgemm computes C = alpha*op(A)*op(B) + beta*C on row-major matrices.
func sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	ta, tb := blas.NoTrans, blas.NoTrans
	if transA {
		ta = blas.Trans
	}
	if transB {
		tb = blas.Trans
	}
	gonumBLAS.Sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

// sgemv computes y = alpha*A*x + beta*y for a row-major m×n matrix A.
func sgemv(m, n int, alpha float32, a []float32, x []float32, beta float32, y []float32) {
	gonumBLAS.Sgemv(blas.NoTrans, m, n, alpha, a, n, x, 1, beta, y, 1)
}

// blasSingleThread: gonum has no threads of its own to configure.
func blasSingleThread() {}

// blasSmallGEMM: gonum has no separate small-matrix kernels (a variable,
// as in the OpenBLAS build, so tests can force the split).
var blasSmallGEMM = func() int { return 0 }

// BLASInfo describes the GEMM in use.
func BLASInfo() string { return blasName }

// BLASCoreIsGeneric is false: the pure-Go BLAS has no CPU-specific kernels.
func BLASCoreIsGeneric() bool { return false }
