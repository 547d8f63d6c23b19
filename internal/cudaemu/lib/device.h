// The device side of CUDA C for the host harness: kernels.cu is compiled by
// g++ with this header and each launch runs every block and thread of the
// grid one at a time. That is exact only for kernels whose threads do not
// cooperate, so everything that lets threads cooperate is refused at
// compile time.
#pragma once
#include <cmath>
#include <cstdint>

struct lwemu_dim3 {
	unsigned x, y, z;
};
// initial-exec: the kernels read these in every loop iteration, and the
// general TLS model would make each read a call.
#define LWEMU_TLS thread_local __attribute__((tls_model("initial-exec")))
extern LWEMU_TLS lwemu_dim3 threadIdx, blockIdx, blockDim, gridDim;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__
#define __launch_bounds__(...)

#define LWEMU_REFUSE(what) _Pragma(LWEMU_STR(GCC error LWEMU_STR(what cannot run in the serial host harness: kernels must be independent per thread (see model/gpu/cudaemu))))
#define LWEMU_STR(x) LWEMU_STR2(x)
#define LWEMU_STR2(x) #x
#define __shared__ LWEMU_REFUSE(__shared__ memory)
#define __syncthreads() LWEMU_REFUSE(__syncthreads) 0
#define __syncwarp(...) LWEMU_REFUSE(__syncwarp) 0
#define __shfl_sync(...) LWEMU_REFUSE(__shfl_sync) 0
#define __shfl_up_sync(...) LWEMU_REFUSE(__shfl_up_sync) 0
#define __shfl_down_sync(...) LWEMU_REFUSE(__shfl_down_sync) 0
#define __shfl_xor_sync(...) LWEMU_REFUSE(__shfl_xor_sync) 0
#define __ballot_sync(...) LWEMU_REFUSE(__ballot_sync) 0
#define __any_sync(...) LWEMU_REFUSE(__any_sync) 0
#define __all_sync(...) LWEMU_REFUSE(__all_sync) 0
#define __activemask() LWEMU_REFUSE(__activemask) 0

// CUDA's integer min/max overloads.
static inline long long min(long long a, long long b) { return a < b ? a : b; }
static inline long long max(long long a, long long b) { return a > b ? a : b; }
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
using std::exp;
using std::log;

// Atomics are exact when one thread runs at a time; with the shuffled
// thread order, a kernel whose result depends on the order of its atomic
// float additions gives different bytes from run to run, which the
// determinism test catches.
static inline float atomicAdd(float *p, float v) {
	float old = *p;
	*p = old + v;
	return old;
}
static inline int atomicAdd(int *p, int v) {
	int old = *p;
	*p = old + v;
	return old;
}
