// Function pointers to the parts of cuBLAS and NVRTC the engine uses, bound
// with dlsym. The prototypes are written out here (no cublas or nvrtc
// headers needed): every one has kept its ABI from CUDA 11 to 13.
#ifndef LEAFWATCH_CUDALIB_H
#define LEAFWATCH_CUDALIB_H
#include <stddef.h>

typedef struct {
	void *lib;
	char path[4096];
	int (*create)(void **handle);
	int (*destroy)(void *handle);
	int (*sgemm)(void *handle, int transa, int transb, int m, int n, int k, const float *alpha,
	             const float *A, int lda, const float *B, int ldb, const float *beta, float *C, int ldc);
	int (*get_property)(int type, int *value);
	// cublasGemmEx (CUDA 11+ prototype: the compute type is a
	// cublasComputeType_t); optional, NULL when the library lacks it.
	int (*gemm_ex)(void *handle, int transa, int transb, int m, int n, int k, const void *alpha, const void *A,
	               int Atype, int lda, const void *B, int Btype, int ldb, const void *beta, void *C, int Ctype, int ldc,
	               int computeType, int algo);
} lw_cublas;

typedef struct {
	void *lib;
	char path[4096];
	int (*version)(int *major, int *minor);
	int (*num_archs)(int *n);
	int (*archs)(int *out);
	int (*create)(void **prog, const char *src, const char *name, int nheaders, const char *const *headers,
	              const char *const *names);
	int (*compile)(void *prog, int nopts, const char *const *opts);
	int (*ptx_size)(void *prog, size_t *size);
	int (*ptx)(void *prog, char *out);
	int (*log_size)(void *prog, size_t *size);
	int (*log)(void *prog, char *out);
	int (*destroy)(void **prog);
	const char *(*error_string)(int result);
} lw_nvrtc;

// Each returns NULL on success or a static description of what failed;
// err receives dlerror's text when a file exists but does not load.
const char *lw_cublas_open(lw_cublas *b, const char *file, char *err, size_t errlen);
const char *lw_nvrtc_open(lw_nvrtc *n, const char *file, char *err, size_t errlen);

int lw_sgemm(lw_cublas *b, void *h, int ta, int tb, int m, int n, int k, float alpha, unsigned long long A, int lda,
             unsigned long long B, int ldb, float beta, unsigned long long C, int ldc);
int lw_gemm_ex(lw_cublas *b, void *h, int ta, int tb, int m, int n, int k, float alpha, unsigned long long A, int atype,
               int lda, unsigned long long B, int btype, int ldb, float beta, unsigned long long C, int ctype, int ldc,
               int compute, int algo);
int lw_nvrtc_compile(lw_nvrtc *n, const char *src, const char *name, int nopts, char **opts, void **prog);
#endif
