// A fake cuBLAS for the host harness, built at test time as
// libcublas.so.<LW_MAJOR> with the real library's version node. Sgemm runs
// OpenBLAS in column-major order after the argument checks cuBLAS makes
// and a bounds check of every operand against the fake driver's
// allocations.
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

enum { OK = 0, NOT_INITIALIZED = 1, ALLOC_FAILED = 3, INVALID_VALUE = 7, EXECUTION_FAILED = 13 };

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

static int operand(void *ctx, const char *name, const void *p, int trans, int m, int n, int ld, char *why) {
	// A column-major rows×cols operand with leading dimension ld spans
	// (cols-1)·ld + rows floats.
	int rows = trans ? n : m, cols = trans ? m : n;
	size_t bytes = ((size_t)(cols - 1) * (size_t)ld + (size_t)rows) * sizeof(float);
	snprintf(why, 64, "Sgemm operand %s", name);
	return api()->check_range(ctx, (uintptr_t)p, bytes, why);
}

static int overlaps(const void *a, size_t an, const void *b, size_t bn) {
	uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;
	return x < y + bn && y < x + an;
}

int cublasSgemm_v2(void *hv, int ta, int tb, int m, int n, int k, const float *alpha, const float *A, int lda,
                   const float *B, int ldb, const float *beta, float *C, int ldc) {
	handle_t *h = hv;
	if (!h || h->magic != MAGIC) return fail(NOT_INITIALIZED, "Sgemm on an invalid or destroyed handle");
	void *cur = api()->current_ctx();
	if (cur != h->ctx) return fail(NOT_INITIALIZED, "Sgemm with a current context other than the handle's");
	int u = api()->ctx_usable(cur);
	if (u != 0) return u == 201 || u == 709 ? NOT_INITIALIZED : EXECUTION_FAILED;
	if (ta < 0 || ta > 2 || tb < 0 || tb > 2) return fail(INVALID_VALUE, "transa=%d transb=%d", ta, tb);
	if (m < 0 || n < 0 || k < 0) return fail(INVALID_VALUE, "m=%d n=%d k=%d", m, n, k);
	int rowsA = ta ? k : m, rowsB = tb ? n : k;
	if (lda < (rowsA > 1 ? rowsA : 1)) return fail(INVALID_VALUE, "lda=%d < %d (rows of A as stored, transa=%d)", lda, rowsA, ta);
	if (ldb < (rowsB > 1 ? rowsB : 1)) return fail(INVALID_VALUE, "ldb=%d < %d (rows of B as stored, transb=%d)", ldb, rowsB, tb);
	if (ldc < (m > 1 ? m : 1)) return fail(INVALID_VALUE, "ldc=%d < m=%d", ldc, m);
	if (!alpha || !beta) return fail(INVALID_VALUE, "alpha or beta is NULL");
	if (m == 0 || n == 0) return OK;
	char why[64];
	if (operand(cur, "C", C, 0, m, n, ldc, why)) return fail(INVALID_VALUE, "C (m=%d n=%d ldc=%d) is outside its allocation", m, n, ldc);
	size_t cb = ((size_t)(n - 1) * ldc + m) * 4;
	if (k > 0) {
		if (operand(cur, "A", A, ta, m, k, lda, why)) return fail(INVALID_VALUE, "A (m=%d k=%d lda=%d transa=%d) is outside its allocation", m, k, lda, ta);
		if (operand(cur, "B", B, tb, k, n, ldb, why)) return fail(INVALID_VALUE, "B (k=%d n=%d ldb=%d transb=%d) is outside its allocation", k, n, ldb, tb);
		size_t ab = ((size_t)((ta ? m : k) - 1) * lda + (ta ? k : m)) * 4;
		size_t bb = ((size_t)((tb ? k : n) - 1) * ldb + (tb ? n : k)) * 4;
		if (overlaps(C, cb, A, ab) || overlaps(C, cb, B, bb)) return fail(INVALID_VALUE, "C overlaps an input operand");
	}
	if (k == 0 || *alpha == 0) {
		// cuBLAS does not read A and B then, and with beta = 0 not C either.
		for (int j = 0; j < n; j++)
			for (int i = 0; i < m; i++) C[(size_t)j * ldc + i] = *beta == 0 ? 0 : *beta * C[(size_t)j * ldc + i];
		return OK;
	}
	if (*beta == 0) {
		// C may hold NaN (fresh device memory): beta = 0 must not read it.
		for (int j = 0; j < n; j++)
			for (int i = 0; i < m; i++) C[(size_t)j * ldc + i] = 0;
	}
	cblas_sgemm(CblasColMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n, k, *alpha, A, lda, B, ldb,
	            *beta, C, ldc);
	return OK;
}
