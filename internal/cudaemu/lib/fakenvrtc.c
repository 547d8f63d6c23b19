// A stand-in for libnvrtc.so.<LW_MAJOR>: it forwards every call to the real
// NVRTC (Debian's 11.x, path in LW_REAL_NVRTC) and exists so the harness can
// show that the engine binds NVRTC under the CUDA 12 and 13 file names and
// version nodes. It reports the real library's version, not LW_MAJOR.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

static void *real(const char *name) {
	static void *lib;
	if (!lib) lib = dlopen(LW_REAL_NVRTC, RTLD_NOW | RTLD_LOCAL);
	return lib ? dlsym(lib, name) : NULL;
}

#define FWD(ret, name, params, args)                        \
	ret name params {                                       \
		ret(*f) params = (ret(*) params)real(#name);        \
		return f ? f args : (ret)7; /* NVRTC_ERROR_INTERNAL_ERROR-ish */ \
	}

FWD(int, nvrtcVersion, (int *a, int *b), (a, b))
FWD(int, nvrtcGetNumSupportedArchs, (int *n), (n))
FWD(int, nvrtcGetSupportedArchs, (int *a), (a))
FWD(int, nvrtcCreateProgram, (void **p, const char *s, const char *n, int h, const char *const *hs, const char *const *hn), (p, s, n, h, hs, hn))
FWD(int, nvrtcCompileProgram, (void *p, int n, const char *const *o), (p, n, o))
FWD(int, nvrtcGetPTXSize, (void *p, size_t *s), (p, s))
FWD(int, nvrtcGetPTX, (void *p, char *o), (p, o))
FWD(int, nvrtcGetProgramLogSize, (void *p, size_t *s), (p, s))
FWD(int, nvrtcGetProgramLog, (void *p, char *o), (p, o))
FWD(int, nvrtcDestroyProgram, (void **p), (p))

const char *nvrtcGetErrorString(int r) {
	const char *(*f)(int) = (const char *(*)(int))real("nvrtcGetErrorString");
	return f ? f(r) : "NVRTC_ERROR (real library not found)";
}
