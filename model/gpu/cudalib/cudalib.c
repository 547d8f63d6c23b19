//go:build cuda

#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <stdint.h>
#include <string.h>
#include "cudalib.h"

static void realpath_of(void *lib, char *out, size_t len) {
	struct link_map *lm = NULL;
	out[0] = 0;
	if (dlinfo(lib, RTLD_DI_LINKMAP, &lm) == 0 && lm && lm->l_name) {
		strncpy(out, lm->l_name, len - 1);
		out[len - 1] = 0;
	}
}

static void *open_lib(const char *file, char *err, size_t errlen) {
	void *lib = dlopen(file, RTLD_NOW | RTLD_LOCAL);
	if (!lib && err && errlen) {
		const char *e = dlerror();
		strncpy(err, e ? e : "dlopen failed", errlen - 1);
		err[errlen - 1] = 0;
	}
	return lib;
}

#define BIND(dst, lib, name)                       \
	do {                                           \
		*(void **)(&(dst)) = dlsym((lib), (name)); \
		if (!(dst)) return "missing symbol " name; \
	} while (0)

const char *lw_cublas_open(lw_cublas *b, const char *file, char *err, size_t errlen) {
	memset(b, 0, sizeof *b);
	void *lib = open_lib(file, err, errlen);
	if (!lib) return "cannot load";
	b->lib = lib;
	realpath_of(lib, b->path, sizeof b->path);
	BIND(b->create, lib, "cublasCreate_v2");
	BIND(b->destroy, lib, "cublasDestroy_v2");
	BIND(b->sgemm, lib, "cublasSgemm_v2");
	*(void **)(&b->get_property) = dlsym(lib, "cublasGetProperty"); // optional
	*(void **)(&b->gemm_ex) = dlsym(lib, "cublasGemmEx");           // optional: fp16 GEMMs
	return NULL;
}

const char *lw_nvrtc_open(lw_nvrtc *n, const char *file, char *err, size_t errlen) {
	memset(n, 0, sizeof *n);
	void *lib = open_lib(file, err, errlen);
	if (!lib) return "cannot load";
	n->lib = lib;
	realpath_of(lib, n->path, sizeof n->path);
	BIND(n->version, lib, "nvrtcVersion");
	BIND(n->create, lib, "nvrtcCreateProgram");
	BIND(n->compile, lib, "nvrtcCompileProgram");
	BIND(n->ptx_size, lib, "nvrtcGetPTXSize");
	BIND(n->ptx, lib, "nvrtcGetPTX");
	BIND(n->log_size, lib, "nvrtcGetProgramLogSize");
	BIND(n->log, lib, "nvrtcGetProgramLog");
	BIND(n->destroy, lib, "nvrtcDestroyProgram");
	BIND(n->error_string, lib, "nvrtcGetErrorString");
	// NVRTC before 11.2 cannot list its architectures; Load falls back to a table.
	*(void **)(&n->num_archs) = dlsym(lib, "nvrtcGetNumSupportedArchs");
	*(void **)(&n->archs) = dlsym(lib, "nvrtcGetSupportedArchs");
	return NULL;
}

// cuBLAS takes alpha and beta by pointer (host pointer mode, the default).
int lw_sgemm(lw_cublas *b, void *h, int ta, int tb, int m, int n, int k, float alpha, unsigned long long A, int lda,
             unsigned long long B, int ldb, float beta, unsigned long long C, int ldc) {
	return b->sgemm(h, ta, tb, m, n, k, &alpha, (const float *)(uintptr_t)A, lda, (const float *)(uintptr_t)B, ldb, &beta,
	                (float *)(uintptr_t)C, ldc);
}

// Alpha and beta are floats: the compute types Leafwatch passes (32F)
// take fp32 scalars.
int lw_gemm_ex(lw_cublas *b, void *h, int ta, int tb, int m, int n, int k, float alpha, unsigned long long A, int atype,
               int lda, unsigned long long B, int btype, int ldb, float beta, unsigned long long C, int ctype, int ldc,
               int compute, int algo) {
	if (!b->gemm_ex) return 15; // CUBLAS_STATUS_NOT_SUPPORTED
	return b->gemm_ex(h, ta, tb, m, n, k, &alpha, (const void *)(uintptr_t)A, atype, lda, (const void *)(uintptr_t)B, btype,
	                  ldb, &beta, (void *)(uintptr_t)C, ctype, ldc, compute, algo);
}

int lw_nvrtc_compile(lw_nvrtc *n, const char *src, const char *name, int nopts, char **opts, void **prog) {
	int r = n->create(prog, src, name, 0, NULL, NULL);
	if (r != 0) return r;
	return n->compile(*prog, nopts, (const char *const *)opts);
}
