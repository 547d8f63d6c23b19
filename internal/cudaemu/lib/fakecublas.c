// A fake cuBLAS for the host harness, built at test time as
// libcublas.so.<LW_MAJOR> with the real library's version node. Sgemm and
// GemmEx run OpenBLAS in column-major order after the argument checks
// cuBLAS makes and a bounds check of every operand against the fake
// driver's allocations.
#define _GNU_SOURCE
#include <cblas.h>
#include <dlfcn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "emu.h"

#ifndef LW_MAJOR
#define LW_MAJOR 11
#endif

enum { OK = 0, NOT_INITIALIZED = 1, ALLOC_FAILED = 3, INVALID_VALUE = 7, ARCH_MISMATCH = 8, EXECUTION_FAILED = 13, NOT_SUPPORTED = 15 };

typedef struct {
	int magic;
	void *ctx;
} handle_t;

#define MAGIC 0x1eaf

static const lw_emu_api *api(void) {
	static const lw_emu_api *a;
	if (!a) {
		a = (const lw_emu_api *)dlsym(RTLD_DEFAULT, "leafwatch_emu_api");
		if (a && a->abi != LW_EMU_ABI) a = NULL;
	}
	return a;
}

__attribute__((format(printf, 2, 3)))
static int fail(int status, const char *fmt, ...) {
	char buf[400], msg[480];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	snprintf(msg, sizeof msg, "cuBLAS %d (fake): %s", LW_MAJOR, buf);
	if (api()) api()->diag(msg);
	return status;
}

int cublasCreate_v2(void **out) {
	if (!out) return INVALID_VALUE;
	if (!api()) return NOT_INITIALIZED;
	void *ctx = api()->current_ctx();
	if (!ctx || api()->ctx_usable(ctx) != 0) return fail(NOT_INITIALIZED, "cublasCreate without a usable current context");
	handle_t *h = calloc(1, sizeof *h);
	if (!h) return ALLOC_FAILED;
	h->magic = MAGIC;
	h->ctx = ctx;
	api()->handles(+1);
	*out = h;
	return OK;
}

int cublasDestroy_v2(void *hv) {
	handle_t *h = hv;
	if (!h || h->magic != MAGIC) return fail(NOT_INITIALIZED, "cublasDestroy of an invalid or destroyed handle");
	// The real library synchronises and frees its workspace in the handle's
	// context: that context must still exist.
	int u = api()->ctx_usable(h->ctx);
	h->magic = 0;
	api()->handles(-1);
	free(h);
	if (u == 201 /* INVALID_CONTEXT */ || u == 709 /* CONTEXT_IS_DESTROYED */) return fail(NOT_INITIALIZED, "cublasDestroy after its context was destroyed");
	return OK;
}

int cublasGetProperty(int type, int *value) {
	if (!value) return INVALID_VALUE;
	switch (type) {
	case 0: *value = LW_MAJOR; return OK;
	case 1: *value = 0; return OK;
	case 2: *value = 0; return OK;
	}
	return INVALID_VALUE;
}

static int operand_sized(void *ctx, const char *name, const void *p, int trans, int m, int n, int ld, size_t elem, char *why) {
	// A column-major rows×cols operand with leading dimension ld spans
	// (cols-1)·ld + rows elements.
	int rows = trans ? n : m, cols = trans ? m : n;
	size_t bytes = ((size_t)(cols - 1) * (size_t)ld + (size_t)rows) * elem;
	snprintf(why, 64, "Sgemm operand %s", name);
	return api()->check_range(ctx, (uintptr_t)p, bytes, why);
}

static int operand(void *ctx, const char *name, const void *p, int trans, int m, int n, int ld, char *why) {
	return operand_sized(ctx, name, p, trans, m, n, ld, sizeof(float), why);
}

static int overlaps(const void *a, size_t an, const void *b, size_t bn) {
	uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;
	return x < y + bn && y < x + an;
}

// handle_checks: a live handle used with its own context current. Returns
// OK with *cur set, or the status cuBLAS answers.
static int handle_checks(const char *fn, handle_t *h, void **cur) {
	if (!h || h->magic != MAGIC) return fail(NOT_INITIALIZED, "%s on an invalid or destroyed handle", fn);
	*cur = api()->current_ctx();
	if (*cur != h->ctx) return fail(NOT_INITIALIZED, "%s with a current context other than the handle's", fn);
	int u = api()->ctx_usable(*cur);
	if (u != 0) return u == 201 || u == 709 ? NOT_INITIALIZED : EXECUTION_FAILED;
	return OK;
}

// shape_checks: cuBLAS's INVALID_VALUE rules for a GEMM's operations,
// sizes, leading dimensions and scalars, in its documented order.
static int shape_checks(const char *fn, int ta, int tb, int m, int n, int k, int lda, int ldb, int ldc, const void *alpha,
                        const void *beta) {
	if (ta < 0 || ta > 2 || tb < 0 || tb > 2) return fail(INVALID_VALUE, "%s transa=%d transb=%d", fn, ta, tb);
	if (m < 0 || n < 0 || k < 0) return fail(INVALID_VALUE, "%s m=%d n=%d k=%d", fn, m, n, k);
	int rowsA = ta ? k : m, rowsB = tb ? n : k;
	if (lda < (rowsA > 1 ? rowsA : 1)) return fail(INVALID_VALUE, "%s lda=%d < %d (rows of A as stored, transa=%d)", fn, lda, rowsA, ta);
	if (ldb < (rowsB > 1 ? rowsB : 1)) return fail(INVALID_VALUE, "%s ldb=%d < %d (rows of B as stored, transb=%d)", fn, ldb, rowsB, tb);
	if (ldc < (m > 1 ? m : 1)) return fail(INVALID_VALUE, "%s ldc=%d < m=%d", fn, ldc, m);
	if (!alpha || !beta) return fail(INVALID_VALUE, "%s alpha or beta is NULL", fn);
	return OK;
}

// operand_checks: C (fp32) and, when k > 0, A and B (es-byte elements)
// inside allocations of ctx, and C overlapping neither.
static int operand_checks(const char *fn, void *cur, int ta, int tb, int m, int n, int k, const void *A, int lda, const void *B,
                          int ldb, const void *C, int ldc, size_t es) {
	char why[64];
	if (operand(cur, "C", C, 0, m, n, ldc, why)) return fail(INVALID_VALUE, "%s C (m=%d n=%d ldc=%d) is outside its allocation", fn, m, n, ldc);
	if (k == 0) return OK;
	if (operand_sized(cur, "A", A, ta, m, k, lda, es, why))
		return fail(INVALID_VALUE, "%s A (m=%d k=%d lda=%d transa=%d, %zu-byte elements) is outside its allocation", fn, m, k, lda, ta, es);
	if (operand_sized(cur, "B", B, tb, k, n, ldb, es, why))
		return fail(INVALID_VALUE, "%s B (k=%d n=%d ldb=%d transb=%d, %zu-byte elements) is outside its allocation", fn, k, n, ldb, tb, es);
	size_t cb = ((size_t)(n - 1) * ldc + m) * 4;
	size_t ab = ((size_t)((ta ? m : k) - 1) * lda + (ta ? k : m)) * es;
	size_t bb = ((size_t)((tb ? k : n) - 1) * ldb + (tb ? n : k)) * es;
	if (overlaps(C, cb, A, ab) || overlaps(C, cb, B, bb)) return fail(INVALID_VALUE, "%s C overlaps an input operand", fn);
	return OK;
}

// scale_only is C = beta·C for the cases cuBLAS reads neither A nor B (k
// = 0 or alpha = 0); with beta = 0 it does not read C either (fresh device
// memory holds NaN here).
static void scale_only(float *C, int m, int n, int ldc, float beta) {
	for (int j = 0; j < n; j++)
		for (int i = 0; i < m; i++) C[(size_t)j * ldc + i] = beta == 0 ? 0 : beta * C[(size_t)j * ldc + i];
}

// zero_c clears C before a product with beta = 0, which must not read it.
static void zero_c(float *C, int m, int n, int ldc) {
	for (int j = 0; j < n; j++)
		for (int i = 0; i < m; i++) C[(size_t)j * ldc + i] = 0;
}

int cublasSgemm_v2(void *hv, int ta, int tb, int m, int n, int k, const float *alpha, const float *A, int lda,
                   const float *B, int ldb, const float *beta, float *C, int ldc) {
	void *cur;
	int r = handle_checks("Sgemm", hv, &cur);
	if (r == OK) r = shape_checks("Sgemm", ta, tb, m, n, k, lda, ldb, ldc, alpha, beta);
	if (r != OK || m == 0 || n == 0) return r;
	if ((r = operand_checks("Sgemm", cur, ta, tb, m, n, k, A, lda, B, ldb, C, ldc, sizeof(float))) != OK) return r;
	if (k == 0 || *alpha == 0) {
		scale_only(C, m, n, ldc, *beta);
		return OK;
	}
	if (*beta == 0) zero_c(C, m, n, ldc);
	cblas_sgemm(CblasColMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, *alpha, A, lda, B, ldb,
	            *beta, C, ldc);
	return OK;
}

// ---- cublasGemmEx ----

// The enumerations' numbers (library_types.h, cublas_api.h; CUDA 11-13).
enum { R_32F = 0, R_64F = 1, R_16F = 2, R_8I = 3, R_32I = 10, R_16BF = 14 };
enum { C_16F = 64, C_16F_PED = 65, C_32F = 68, C_32F_PED = 69, C_64F = 70, C_64F_PED = 71, C_32I = 72, C_32I_PED = 73,
       C_32F_FAST_16F = 74, C_32F_FAST_16BF = 75, C_32F_FAST_TF32 = 77 };

static size_t type_size(int t) {
	switch (t) {
	case R_32F: case R_32I: return 4;
	case R_64F: return 8;
	case R_16F: case R_16BF: return 2;
	case R_8I: return 1;
	}
	return 0;
}

// supported is cuBLAS's table of (compute type, A/B type, C type) for
// cublasGemmEx's real-valued cases.
static int supported(int compute, int ab, int c) {
	switch (compute) {
	case C_16F: case C_16F_PED:
		return ab == R_16F && c == R_16F;
	case C_32F: case C_32F_PED:
		return (ab == R_16F && (c == R_16F || c == R_32F)) || (ab == R_16BF && (c == R_16BF || c == R_32F)) ||
		       (ab == R_8I && c == R_32F) || (ab == R_32F && c == R_32F);
	case C_32F_FAST_16F: case C_32F_FAST_16BF: case C_32F_FAST_TF32:
		return ab == R_32F && c == R_32F;
	case C_64F: case C_64F_PED:
		return ab == R_64F && c == R_64F;
	case C_32I: case C_32I_PED:
		return ab == R_8I && c == R_32I;
	}
	return 0;
}

static int known_compute(int c) { return (c >= C_16F && c <= C_32I_PED) || c == C_32F_FAST_16F || c == C_32F_FAST_16BF || c == C_32F_FAST_TF32; }
static int known_algo(int a) { return (a >= -1 && a <= 23) || (a >= 99 && a <= 115); }

// half_to_float widens an IEEE half exactly (internal/half's ToFloat32).
static float half_to_float(uint16_t h) {
	union { uint32_t u; float f; } v;
	if ((h & 0x7c00) == 0x7c00) {
		v.u = (uint32_t)(h & 0x8000) << 16 | 0x7f800000u | (uint32_t)(h & 0x3ff) << 13;
		return v.f;
	}
	v.u = (uint32_t)(h & 0x8000) << 16 | (uint32_t)(h & 0x7fff) << 13;
	return v.f * 0x1p112f;
}

// widen copies a column-major rows×cols fp16 operand into packed floats
// (leading dimension rows): exact, as a GPU's fp16 products in fp32 are.
static float *widen(const uint16_t *p, int rows, int cols, int ld) {
	float *out = malloc((size_t)rows * cols * sizeof(float) + 1);
	if (!out) return NULL;
	for (int j = 0; j < cols; j++)
		for (int i = 0; i < rows; i++) out[(size_t)j * rows + i] = half_to_float(p[(size_t)j * ld + i]);
	return out;
}

static int device_cc(void) {
	typedef int (*getattr)(int *, int, int);
	getattr f = (getattr)dlsym(RTLD_DEFAULT, "cuDeviceGetAttribute");
	int major = 0, minor = 0;
	if (!f || f(&major, 75, 0) || f(&minor, 76, 0)) return 0; // COMPUTE_CAPABILITY_MAJOR/MINOR
	return major * 10 + minor;
}

// cublasGemmEx with cuBLAS's argument checks, in the order its
// documentation lists the failures. It emulates the combinations Leafwatch
// calls (fp16 or fp32 A and B, fp32 C, CUBLAS_COMPUTE_32F); any other
// combination cuBLAS supports answers NOT_SUPPORTED with a diagnostic
// saying the fake does not emulate it.
int cublasGemmEx(void *hv, int ta, int tb, int m, int n, int k, const void *alpha, const void *A, int atype, int lda,
                 const void *B, int btype, int ldb, const void *beta, void *Cv, int ctype, int ldc, int compute, int algo) {
	void *cur;
	int r = handle_checks("GemmEx", hv, &cur);
	if (r != OK) return r;
	int cc = device_cc();
	if (cc && cc < 50) return fail(ARCH_MISMATCH, "GemmEx needs compute capability 5.0 (device %d.%d)", cc / 10, cc % 10);
	if ((r = shape_checks("GemmEx", ta, tb, m, n, k, lda, ldb, ldc, alpha, beta)) != OK) return r;
	if (!known_compute(compute)) return fail(INVALID_VALUE, "GemmEx computeType %d is not a cublasComputeType_t", compute);
	if (!known_algo(algo)) return fail(INVALID_VALUE, "GemmEx algo %d is not a cublasGemmAlgo_t", algo);
	if (atype != btype || !type_size(atype) || !type_size(ctype) || !supported(compute, atype, ctype))
		return fail(NOT_SUPPORTED, "GemmEx types A=%d B=%d C=%d with computeType %d are not a supported combination", atype, btype, ctype, compute);
	if (compute != C_32F || ctype != R_32F || (atype != R_16F && atype != R_32F))
		return fail(NOT_SUPPORTED, "GemmEx types A=%d C=%d computeType %d: supported by cuBLAS, not emulated by the fake", atype, ctype, compute);
	// With CUBLAS_COMPUTE_32F the scalars are floats.
	float al = *(const float *)alpha, be = *(const float *)beta;
	if (m == 0 || n == 0) return OK;
	size_t es = type_size(atype);
	if ((r = operand_checks("GemmEx", cur, ta, tb, m, n, k, A, lda, B, ldb, Cv, ldc, es)) != OK) return r;
	float *C = Cv;
	if (k == 0 || al == 0) {
		scale_only(C, m, n, ldc, be);
		return OK;
	}
	if (be == 0) zero_c(C, m, n, ldc);
	if (atype == R_32F) {
		cblas_sgemm(CblasColMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, al, A, lda, B, ldb,
		            be, C, ldc);
		return OK;
	}
	int ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
	float *a = widen(A, ar, ac, lda), *b = widen(B, br, bc, ldb);
	if (!a || !b) {
		free(a);
		free(b);
		return fail(EXECUTION_FAILED, "GemmEx: host memory for the widened operands");
	}
	cblas_sgemm(CblasColMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, al, a, ar, b, br, be, C, ldc);
	free(a);
	free(b);
	return OK;
}
