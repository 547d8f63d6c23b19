//go:build cuda && cudaemu

// The fake CUDA driver API: the functions model/gpu reaches through
// gorgonia.org/cu, with the checks a real driver makes and some it does
// not (bounds of every copy and pointer argument). Defined in the test
// binary, these take precedence over libcuda.so.1.

#define _GNU_SOURCE
#include <cuda.h>
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "emu.h"

typedef struct ctx_t {
	int id;
	int alive;
	int sticky; // a CUresult after which the context is unusable
} ctx_t;

typedef struct alloc_t {
	uintptr_t base;
	size_t size;
	void *map;
	size_t maplen;
	ctx_t *ctx;
	struct alloc_t *next;
} alloc_t;

typedef struct module_t {
	ctx_t *ctx;
	int alive;
	char target[32];
	int nentries;
	char **entries;
	struct module_t *next;
} module_t;

typedef struct func_t {
	module_t *mod;
	char name[128];
	lw_emu_kernel run;
	struct func_t *next;
} func_t;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static __thread ctx_t *current;

// Device configuration (leafwatch_emu_configure).
static int cfg_count = 1, cfg_major = 8, cfg_minor = 7, cfg_driver = 11080;
static size_t cfg_total = (size_t)8 << 30;

static int initialized;
static int next_ctx_id = 1;
static alloc_t *allocs;
static func_t *funcs;
static module_t *modules;
static void *kernel_lib;
static char last_target[32];

// Statistics and injected faults.
static long st_contexts, st_allocs, st_modules, st_handles, st_launches, st_leaked_at_destroy, st_errors;
static size_t st_bytes;
static int inject_code, inject_after = -1;
static uint64_t launch_seed = 0x9e3779b97f4a7c15ull;

#define NDIAG 64
static char diags[NDIAG][512];
static int ndiag;

static void diag_locked(const char *msg) {
	if (ndiag < NDIAG) {
		strncpy(diags[ndiag], msg, sizeof diags[0] - 1);
		diags[ndiag][sizeof diags[0] - 1] = 0;
		ndiag++;
	}
}

static void diagf(const char *fmt, ...) {
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	diag_locked(buf);
	st_errors++;
}

static void api_diag(const char *msg) {
	pthread_mutex_lock(&mu);
	diag_locked(msg);
	st_errors++;
	pthread_mutex_unlock(&mu);
}

// ---- context checks ----

static CUresult usable_locked(ctx_t *c) {
	if (!initialized) return CUDA_ERROR_NOT_INITIALIZED;
	if (!c) return CUDA_ERROR_INVALID_CONTEXT;
	if (!c->alive) return CUDA_ERROR_CONTEXT_IS_DESTROYED;
	if (c->sticky) return (CUresult)c->sticky;
	return CUDA_SUCCESS;
}

// need_ctx checks the calling thread's context, recording why it fails.
static CUresult need_ctx(const char *fn) {
	CUresult r = usable_locked(current);
	if (r != CUDA_SUCCESS && !(current && current->sticky && r == (CUresult)current->sticky)) {
		diagf("%s: no usable current context on this thread (CUresult %d)", fn, r);
	}
	return r;
}

static alloc_t *find_alloc(uintptr_t p) {
	for (alloc_t *a = allocs; a; a = a->next) {
		if (p >= a->base && p < a->base + a->size) return a;
	}
	return NULL;
}

// check_range_locked: [p, p+bytes) lies inside one live allocation of c.
static int check_range_locked(ctx_t *c, uintptr_t p, size_t bytes, const char *what) {
	alloc_t *a = find_alloc(p);
	if (!a) {
		diagf("%s: 0x%lx is not inside any device allocation", what, (unsigned long)p);
		return CUDA_ERROR_INVALID_VALUE;
	}
	if (a->ctx != c) {
		diagf("%s: 0x%lx belongs to context %d, the current context is %d", what, (unsigned long)p, a->ctx->id, c ? c->id : 0);
		return CUDA_ERROR_INVALID_VALUE;
	}
	if (bytes > a->size - (p - a->base)) {
		diagf("%s: %zu bytes at offset %zu overrun the %zu-byte allocation", what, bytes, (size_t)(p - a->base), a->size);
		return CUDA_ERROR_INVALID_VALUE;
	}
	return 0;
}

static void *api_current(void) { return current; }

static int api_usable(void *c) {
	pthread_mutex_lock(&mu);
	int r = usable_locked((ctx_t *)c);
	pthread_mutex_unlock(&mu);
	return r;
}

static int api_check_range(void *c, uintptr_t p, size_t bytes, const char *what) {
	pthread_mutex_lock(&mu);
	int r = check_range_locked((ctx_t *)c, p, bytes, what);
	pthread_mutex_unlock(&mu);
	return r;
}

static void api_handles(int delta) {
	pthread_mutex_lock(&mu);
	st_handles += delta;
	pthread_mutex_unlock(&mu);
}

const lw_emu_api leafwatch_emu_api = {LW_EMU_ABI, api_current, api_usable, api_check_range, api_diag, api_handles};

// ---- initialisation and devices ----

CUresult CUDAAPI cuInit(unsigned int flags) {
	if (flags != 0) return CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&mu);
	initialized = 1;
	pthread_mutex_unlock(&mu);
	return CUDA_SUCCESS;
}

CUresult CUDAAPI cuDriverGetVersion(int *v) {
	if (!v) return CUDA_ERROR_INVALID_VALUE;
	*v = cfg_driver;
	return CUDA_SUCCESS;
}

CUresult CUDAAPI cuDeviceGetCount(int *n) {
	if (!initialized) return CUDA_ERROR_NOT_INITIALIZED;
	if (!n) return CUDA_ERROR_INVALID_VALUE;
	*n = cfg_count;
	return CUDA_SUCCESS;
}

CUresult CUDAAPI cuDeviceGet(CUdevice *d, int ordinal) {
	if (!initialized) return CUDA_ERROR_NOT_INITIALIZED;
	if (!d) return CUDA_ERROR_INVALID_VALUE;
	if (ordinal < 0 || ordinal >= cfg_count) return CUDA_ERROR_INVALID_DEVICE;
	*d = ordinal;
	return CUDA_SUCCESS;
}

CUresult CUDAAPI cuDeviceGetName(char *name, int len, CUdevice d) {
	if (!initialized) return CUDA_ERROR_NOT_INITIALIZED;
	if (d < 0 || d >= cfg_count) return CUDA_ERROR_INVALID_DEVICE;
	if (!name || len <= 0) return CUDA_ERROR_INVALID_VALUE;
	snprintf(name, (size_t)len, "Leafwatch emulated GPU");
	return CUDA_SUCCESS;
}

CUresult CUDAAPI cuDeviceTotalMem(size_t *bytes, CUdevice d) {
	if (!initialized) return CUDA_ERROR_NOT_INITIALIZED;
	if (d < 0 || d >= cfg_count) return CUDA_ERROR_INVALID_DEVICE;
	*bytes = cfg_total;
	return CUDA_SUCCESS;
}

CUresult CUDAAPI cuDeviceGetAttribute(int *v, CUdevice_attribute a, CUdevice d) {
	if (!initialized) return CUDA_ERROR_NOT_INITIALIZED;
	if (d < 0 || d >= cfg_count) return CUDA_ERROR_INVALID_DEVICE;
	if (!v) return CUDA_ERROR_INVALID_VALUE;
	switch (a) {
	case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *v = cfg_major; break;
	case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *v = cfg_minor; break;
	case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *v = 1024; break;
	case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X: *v = 1024; break;
	case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y: *v = 1024; break;
	case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z: *v = 64; break;
	case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X: *v = 2147483647; break;
	case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y: *v = 65535; break;
	case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z: *v = 65535; break;
	case CU_DEVICE_ATTRIBUTE_WARP_SIZE: *v = 32; break;
	case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: *v = 8; break;
	case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK: *v = 48 << 10; break;
	case CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING: *v = 1; break;
	case CU_DEVICE_ATTRIBUTE_INTEGRATED: *v = 0; break;
	default:
		pthread_mutex_lock(&mu);
		diagf("cuDeviceGetAttribute: attribute %d is not emulated", (int)a);
		pthread_mutex_unlock(&mu);
		return CUDA_ERROR_INVALID_VALUE;
	}
	return CUDA_SUCCESS;
}

// ---- contexts ----

CUresult CUDAAPI cuCtxCreate(CUcontext *pctx, unsigned int flags, CUdevice d) {
	(void)flags;
	if (!pctx) return CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&mu);
	if (!initialized) {
		pthread_mutex_unlock(&mu);
		return CUDA_ERROR_NOT_INITIALIZED;
	}
	if (d < 0 || d >= cfg_count) {
		pthread_mutex_unlock(&mu);
		return CUDA_ERROR_INVALID_DEVICE;
	}
	ctx_t *c = calloc(1, sizeof *c);
	c->id = next_ctx_id++;
	c->alive = 1;
	st_contexts++;
	current = c; // a new context is made current on the calling thread
	pthread_mutex_unlock(&mu);
	*pctx = (CUcontext)c;
	return CUDA_SUCCESS;
}

// Freed mappings are kept for reuse (up to a cap): a test that opens and
// closes engines would otherwise spend most of its time in the kernel
// zeroing fresh pages that the NaN fill overwrites anyway.
typedef struct spare_t {
	void *map;
	size_t maplen;
	struct spare_t *next;
} spare_t;
static spare_t *spares;
static size_t spare_bytes;
#define SPARE_CAP ((size_t)3 << 30)

static void free_alloc(alloc_t *a) {
	if (spare_bytes + a->maplen <= SPARE_CAP) {
		spare_t *s = malloc(sizeof *s);
		s->map = a->map;
		s->maplen = a->maplen;
		s->next = spares;
		spares = s;
		spare_bytes += a->maplen;
	} else {
		munmap(a->map, a->maplen);
	}
	st_allocs--;
	st_bytes -= a->size;
	free(a);
}

static char *take_spare(size_t maplen) {
	for (spare_t **pp = &spares; *pp; pp = &(*pp)->next) {
		spare_t *s = *pp;
		if (s->maplen == maplen) {
			char *m = s->map;
			*pp = s->next;
			spare_bytes -= maplen;
			free(s);
			return m;
		}
	}
	return NULL;
}

CUresult CUDAAPI cuCtxDestroy(CUcontext pc) {
	ctx_t *c = (ctx_t *)pc;
	pthread_mutex_lock(&mu);
	if (!c || !c->alive) {
		diagf("cuCtxDestroy: context %d is not alive", c ? c->id : 0);
		pthread_mutex_unlock(&mu);
		return CUDA_ERROR_INVALID_CONTEXT;
	}
	// The driver frees what a context still holds; the harness counts it,
	// so a test can tell explicit frees from a destroy that swept up.
	for (alloc_t **pp = &allocs; *pp;) {
		alloc_t *a = *pp;
		if (a->ctx == c) {
			*pp = a->next;
			st_leaked_at_destroy++;
			free_alloc(a);
		} else {
			pp = &a->next;
		}
	}
	for (module_t *m = modules; m; m = m->next) {
		if (m->ctx == c && m->alive) {
			m->alive = 0;
			st_modules--;
			st_leaked_at_destroy++;
		}
	}
	c->alive = 0; // kept (never freed) so later use is reported, not a crash
	st_contexts--;
	if (current == c) current = NULL;
	pthread_mutex_unlock(&mu);
	return CUDA_SUCCESS;
}

CUresult CUDAAPI cuCtxSetCurrent(CUcontext pc) {
	ctx_t *c = (ctx_t *)pc;
	pthread_mutex_lock(&mu);
	if (c && !c->alive) {
		diagf("cuCtxSetCurrent: context %d was destroyed", c->id);
		pthread_mutex_unlock(&mu);
		return CUDA_ERROR_INVALID_CONTEXT;
	}
	current = c;
	pthread_mutex_unlock(&mu);
	return CUDA_SUCCESS;
}

CUresult CUDAAPI cuCtxGetCurrent(CUcontext *pc) {
	if (!pc) return CUDA_ERROR_INVALID_VALUE;
	*pc = (CUcontext)current;
	return CUDA_SUCCESS;
}

CUresult CUDAAPI cuCtxSynchronize(void) {
	pthread_mutex_lock(&mu);
	CUresult r = need_ctx("cuCtxSynchronize");
	pthread_mutex_unlock(&mu);
	return r;
}

// ---- memory ----

CUresult CUDAAPI cuMemAlloc(CUdeviceptr *dp, size_t bytes) {
	if (!dp) return CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&mu);
	CUresult r = need_ctx("cuMemAlloc");
	if (r != CUDA_SUCCESS) {
		pthread_mutex_unlock(&mu);
		return r;
	}
	if (bytes == 0) {
		diagf("cuMemAlloc: 0 bytes");
		pthread_mutex_unlock(&mu);
		return CUDA_ERROR_INVALID_VALUE;
	}
	if (st_bytes + bytes > cfg_total) {
		diagf("cuMemAlloc: %zu bytes do not fit (%zu of %zu in use)", bytes, st_bytes, cfg_total);
		pthread_mutex_unlock(&mu);
		return CUDA_ERROR_OUT_OF_MEMORY;
	}
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t rounded = (bytes + 3) & ~(size_t)3;
	size_t body = (rounded + page - 1) / page * page;
	size_t maplen = body + 2 * page; // guard pages before and after
	char *m = take_spare(maplen);
	if (!m) {
		m = mmap(NULL, maplen, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (m == MAP_FAILED || mprotect(m + page, body, PROT_READ | PROT_WRITE) != 0) {
			if (m != MAP_FAILED) munmap(m, maplen);
			pthread_mutex_unlock(&mu);
			return CUDA_ERROR_OUT_OF_MEMORY;
		}
	}
	// The allocation ends flush against the trailing guard page, so a
	// kernel that writes one float too far faults at once. Uninitialised
	// device memory reads as NaN (0xff bytes; -1 as an int).
	char *base = m + page + body - rounded;
	memset(base, 0xff, rounded);
	alloc_t *a = calloc(1, sizeof *a);
	a->base = (uintptr_t)base;
	a->size = bytes;
	a->map = m;
	a->maplen = maplen;
	a->ctx = current;
	a->next = allocs;
	allocs = a;
	st_allocs++;
	st_bytes += bytes;
	pthread_mutex_unlock(&mu);
	*dp = (CUdeviceptr)a->base;
	return CUDA_SUCCESS;
}

CUresult CUDAAPI cuMemFree(CUdeviceptr p) {
	pthread_mutex_lock(&mu);
	if (!initialized) {
		pthread_mutex_unlock(&mu);
		return CUDA_ERROR_NOT_INITIALIZED;
	}
	if (!current || !current->alive) {
		diagf("cuMemFree(0x%llx): no current context", (unsigned long long)p);
		pthread_mutex_unlock(&mu);
		return CUDA_ERROR_INVALID_CONTEXT;
	}
	for (alloc_t **pp = &allocs; *pp; pp = &(*pp)->next) {
		alloc_t *a = *pp;
		if (a->base == (uintptr_t)p) {
			*pp = a->next;
			free_alloc(a);
			pthread_mutex_unlock(&mu);
			return CUDA_SUCCESS;
		}
	}
	diagf("cuMemFree(0x%llx): not the start of a live allocation (double free?)", (unsigned long long)p);
	pthread_mutex_unlock(&mu);
	return CUDA_ERROR_INVALID_VALUE;
}

CUresult CUDAAPI cuMemGetInfo(size_t *freeb, size_t *total) {
	pthread_mutex_lock(&mu);
	CUresult r = need_ctx("cuMemGetInfo");
	if (r == CUDA_SUCCESS) {
		if (freeb) *freeb = cfg_total - st_bytes;
		if (total) *total = cfg_total;
	}
	pthread_mutex_unlock(&mu);
	return r;
}

static CUresult copy(const char *fn, CUdeviceptr dev, void *dst, const void *src, size_t n) {
	pthread_mutex_lock(&mu);
	CUresult r = need_ctx(fn);
	if (r == CUDA_SUCCESS && n > 0 && check_range_locked(current, (uintptr_t)dev, n, fn) != 0) r = CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_unlock(&mu);
	if (r == CUDA_SUCCESS && n > 0) memcpy(dst, src, n);
	return r;
}

CUresult CUDAAPI cuMemcpyHtoD(CUdeviceptr dst, const void *src, size_t n) {
	if (!src && n) return CUDA_ERROR_INVALID_VALUE;
	return copy("cuMemcpyHtoD", dst, (void *)(uintptr_t)dst, src, n);
}

CUresult CUDAAPI cuMemcpyDtoH(void *dst, CUdeviceptr src, size_t n) {
	if (!dst && n) return CUDA_ERROR_INVALID_VALUE;
	return copy("cuMemcpyDtoH", src, dst, (const void *)(uintptr_t)src, n);
}

CUresult CUDAAPI cuMemsetD32(CUdeviceptr dst, unsigned int v, size_t n) {
	pthread_mutex_lock(&mu);
	CUresult r = need_ctx("cuMemsetD32");
	if (r == CUDA_SUCCESS && n > 0 && ((uintptr_t)dst % 4 != 0 || check_range_locked(current, (uintptr_t)dst, n * 4, "cuMemsetD32") != 0)) r = CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_unlock(&mu);
	if (r == CUDA_SUCCESS) {
		unsigned int *p = (unsigned int *)(uintptr_t)dst;
		for (size_t i = 0; i < n; i++) p[i] = v;
	}
	return r;
}

// ---- modules ----

// parse_ptx records the target and every .entry name of a PTX text.
static int parse_ptx(module_t *m, const char *ptx) {
	if (!strstr(ptx, ".version") || !strstr(ptx, ".target")) return 0;
	const char *t = strstr(ptx, ".target");
	sscanf(t, ".target %31[A-Za-z0-9_]", m->target);
	int cap = 32;
	m->entries = calloc((size_t)cap, sizeof(char *));
	for (const char *p = ptx; (p = strstr(p, ".entry")) != NULL; p += 6) {
		const char *s = p + 6;
		while (*s == ' ' || *s == '\t') s++;
		const char *e = s;
		while ((*e >= 'a' && *e <= 'z') || (*e >= 'A' && *e <= 'Z') || (*e >= '0' && *e <= '9') || *e == '_') e++;
		if (e == s) continue;
		if (m->nentries == cap) {
			cap *= 2;
			m->entries = realloc(m->entries, (size_t)cap * sizeof(char *));
		}
		m->entries[m->nentries++] = strndup(s, (size_t)(e - s));
	}
	return 1;
}

CUresult CUDAAPI cuModuleLoadData(CUmodule *pm, const void *image) {
	if (!pm || !image) return CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&mu);
	CUresult r = need_ctx("cuModuleLoadData");
	if (r != CUDA_SUCCESS) {
		pthread_mutex_unlock(&mu);
		return r;
	}
	module_t *m = calloc(1, sizeof *m);
	if (!parse_ptx(m, (const char *)image)) {
		diagf("cuModuleLoadData: the image is not PTX text (no .version/.target)");
		free(m);
		pthread_mutex_unlock(&mu);
		return CUDA_ERROR_INVALID_IMAGE;
	}
	m->ctx = current;
	m->alive = 1;
	m->next = modules;
	modules = m;
	st_modules++;
	strncpy(last_target, m->target, sizeof last_target - 1);
	pthread_mutex_unlock(&mu);
	*pm = (CUmodule)m;
	return CUDA_SUCCESS;
}

CUresult CUDAAPI cuModuleGetFunction(CUfunction *pf, CUmodule pm, const char *name) {
	module_t *m = (module_t *)pm;
	if (!pf || !m || !name) return CUDA_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&mu);
	CUresult r = need_ctx("cuModuleGetFunction");
	if (r == CUDA_SUCCESS && (!m->alive || m->ctx != current)) {
		diagf("cuModuleGetFunction(%s): module unloaded or of another context", name);
		r = CUDA_ERROR_INVALID_HANDLE;
	}
	if (r != CUDA_SUCCESS) {
		pthread_mutex_unlock(&mu);
		return r;
	}
	int found = 0;
	for (int i = 0; i < m->nentries; i++) found |= strcmp(m->entries[i], name) == 0;
	if (!found) {
		diagf("cuModuleGetFunction: %s is not an .entry of the loaded PTX", name);
		pthread_mutex_unlock(&mu);
		return CUDA_ERROR_NOT_FOUND;
	}
	char sym[160];
	snprintf(sym, sizeof sym, "lwemu_run_%s", name);
	lw_emu_kernel run = kernel_lib ? (lw_emu_kernel)dlsym(kernel_lib, sym) : NULL;
	if (!run) {
		diagf("cuModuleGetFunction: %s has no host build (harness not set up?)", name);
		pthread_mutex_unlock(&mu);
		return CUDA_ERROR_NOT_FOUND;
	}
	func_t *f = calloc(1, sizeof *f);
	f->mod = m;
	strncpy(f->name, name, sizeof f->name - 1);
	f->run = run;
	f->next = funcs;
	funcs = f;
	pthread_mutex_unlock(&mu);
	*pf = (CUfunction)f;
	return CUDA_SUCCESS;
}

CUresult CUDAAPI cuModuleUnload(CUmodule pm) {
	module_t *m = (module_t *)pm;
	pthread_mutex_lock(&mu);
	CUresult r = need_ctx("cuModuleUnload");
	if (r == CUDA_SUCCESS && (!m || !m->alive)) {
		diagf("cuModuleUnload: module not loaded");
		r = CUDA_ERROR_INVALID_HANDLE;
	}
	if (r == CUDA_SUCCESS) {
		m->alive = 0;
		st_modules--;
	}
	pthread_mutex_unlock(&mu);
	return r;
}

// ---- launches ----

static int check_arg(void *c, uintptr_t p, const char *name, int arg) {
	if (p == 0) return 0;
	pthread_mutex_lock(&mu);
	alloc_t *a = find_alloc(p);
	int r = 0;
	if (!a || a->ctx != (ctx_t *)c) {
		diagf("kernel %s: pointer argument %d (0x%lx) is not inside a live allocation of the current context", name, arg, (unsigned long)p);
		r = CUDA_ERROR_ILLEGAL_ADDRESS;
	}
	pthread_mutex_unlock(&mu);
	return r;
}

CUresult CUDAAPI cuLaunchKernel(CUfunction pf, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                                unsigned shmem, CUstream stream, void **params, void **extra) {
	func_t *f = (func_t *)pf;
	pthread_mutex_lock(&mu);
	CUresult r = need_ctx("cuLaunchKernel");
	if (r != CUDA_SUCCESS) {
		pthread_mutex_unlock(&mu);
		return r;
	}
	ctx_t *c = current;
	if (!f || !f->mod->alive || f->mod->ctx != c) {
		diagf("cuLaunchKernel(%s): function of an unloaded module or another context", f ? f->name : "?");
		pthread_mutex_unlock(&mu);
		return CUDA_ERROR_INVALID_HANDLE;
	}
	if (gx == 0 || gy == 0 || gz == 0 || gx > 2147483647u || gy > 65535 || gz > 65535 || bx == 0 || by == 0 || bz == 0 ||
	    bx > 1024 || by > 1024 || bz > 64 || (unsigned long long)bx * by * bz > 1024) {
		diagf("cuLaunchKernel(%s): bad geometry grid %ux%ux%u block %ux%ux%u", f->name, gx, gy, gz, bx, by, bz);
		pthread_mutex_unlock(&mu);
		return CUDA_ERROR_INVALID_VALUE;
	}
	if (shmem > 48 * 1024 || extra != NULL || stream != NULL) {
		diagf("cuLaunchKernel(%s): dynamic shared memory, extra or a stream is not emulated", f->name);
		pthread_mutex_unlock(&mu);
		return CUDA_ERROR_INVALID_VALUE;
	}
	st_launches++;
	if (inject_after >= 0 && inject_after-- == 0) {
		c->sticky = inject_code;
		diagf("cuLaunchKernel(%s): injected sticky error %d", f->name, inject_code);
		inject_after = -1;
		pthread_mutex_unlock(&mu);
		return (CUresult)c->sticky;
	}
	launch_seed = launch_seed * 6364136223846793005ull + 1442695040888963407ull;
	lw_emu_launch l = {{gx, gy, gz}, {bx, by, bz}, launch_seed, c, check_arg};
	lw_emu_kernel run = f->run;
	pthread_mutex_unlock(&mu);
	r = (CUresult)run(params, &l);
	if (r != CUDA_SUCCESS) {
		pthread_mutex_lock(&mu);
		if (r == CUDA_ERROR_ILLEGAL_ADDRESS) c->sticky = r; // as on a GPU: the context is lost
		pthread_mutex_unlock(&mu);
	}
	return r;
}

// ---- control from the Go side of the harness ----

void leafwatch_emu_configure(int count, int major, int minor, size_t total, int driver) {
	pthread_mutex_lock(&mu);
	cfg_count = count;
	cfg_major = major;
	cfg_minor = minor;
	cfg_total = total;
	cfg_driver = driver;
	pthread_mutex_unlock(&mu);
}

// leafwatch_emu_set_kernels loads the host build of the kernels.
int leafwatch_emu_set_kernels(const char *path, char *err, size_t errlen) {
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		snprintf(err, errlen, "%s", dlerror());
		return -1;
	}
	pthread_mutex_lock(&mu);
	kernel_lib = h;
	pthread_mutex_unlock(&mu);
	return 0;
}

void leafwatch_emu_inject(int code, int after) {
	pthread_mutex_lock(&mu);
	inject_code = code;
	inject_after = after;
	pthread_mutex_unlock(&mu);
}

void leafwatch_emu_stats(lw_emu_stats *s) {
	pthread_mutex_lock(&mu);
	s->contexts = st_contexts;
	s->allocs = st_allocs;
	s->modules = st_modules;
	s->handles = st_handles;
	s->launches = st_launches;
	s->leaked_at_destroy = st_leaked_at_destroy;
	s->errors = st_errors;
	s->bytes = st_bytes;
	memcpy(s->target, last_target, sizeof s->target);
	pthread_mutex_unlock(&mu);
}

// leafwatch_emu_diag copies out and clears the diagnostics; returns how many.
int leafwatch_emu_diag(char *out, size_t len) {
	pthread_mutex_lock(&mu);
	int n = ndiag;
	size_t used = 0;
	out[0] = 0;
	for (int i = 0; i < ndiag && used + 2 < len; i++) {
		int w = snprintf(out + used, len - used, "%s\n", diags[i]);
		if (w < 0) break;
		used += (size_t)w;
	}
	ndiag = 0;
	pthread_mutex_unlock(&mu);
	return n;
}

// leafwatch_emu_library_path names the file a soname resolves to.
int leafwatch_emu_library_path(const char *soname, char *out, size_t len) {
	void *h = dlopen(soname, RTLD_LAZY | RTLD_LOCAL);
	if (!h) return -1;
	struct link_map *lm = NULL;
	int r = -1;
	if (dlinfo(h, RTLD_DI_LINKMAP, &lm) == 0 && lm && lm->l_name) {
		snprintf(out, len, "%s", lm->l_name);
		r = 0;
	}
	dlclose(h);
	return r;
}

// leafwatch_emu_current_context lets a test see the calling thread's context.
void *leafwatch_emu_current_context(void) { return current; }
