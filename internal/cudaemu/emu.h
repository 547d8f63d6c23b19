// Shared between the fake driver (linked into the test binary) and the
// libraries the harness builds at run time (fake cuBLAS, host kernels).
#ifndef LEAFWATCH_CUDAEMU_H
#define LEAFWATCH_CUDAEMU_H
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

// Services the fake driver offers to the fake cuBLAS, found with
// dlsym(RTLD_DEFAULT, "leafwatch_emu_api") (the test binary is linked with
// -rdynamic).
typedef struct {
	int abi;                                   // LW_EMU_ABI
	void *(*current_ctx)(void);                // the calling thread's context or NULL
	int (*ctx_usable)(void *ctx);              // 0 ok, else a CUresult (destroyed, sticky)
	int (*check_range)(void *ctx, uintptr_t p, size_t bytes, const char *what); // 0 when inside one allocation of ctx
	void (*diag)(const char *msg);             // record a diagnostic for the test's log
	void (*handles)(int delta);                // live cuBLAS handle count
} lw_emu_api;

#define LW_EMU_ABI 1

// One kernel launch as the host kernels see it.
typedef struct {
	unsigned grid[3], block[3];
	uint64_t seed; // shuffles block and thread order
	void *ctx;
	// check returns 0 when p (argument arg of kernel name) is NULL or inside
	// a live allocation of ctx, else a CUresult.
	int (*check)(void *ctx, uintptr_t p, const char *name, int arg);
} lw_emu_launch;

// Counters the Go side reads (leafwatch_emu_stats).
typedef struct {
	long contexts, allocs, modules, handles, launches, leaked_at_destroy, errors;
	size_t bytes;
	char target[32]; // .target of the last PTX loaded
} lw_emu_stats;

typedef int (*lw_emu_kernel)(void **params, const lw_emu_launch *l);

#ifdef __cplusplus
}
#endif
#endif
