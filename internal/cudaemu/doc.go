// Package cudaemu owns the host emulation harness of the CUDA engine: a
// fake of the CUDA driver API, of cuBLAS and of the 12/13 library names,
// and a host build of kernels.cu, so that the real model/gpu code runs,
// and is checked, on a machine without a GPU.
//
// It exists only with the build tag cudaemu (together with cuda). A test
// binary that imports it gets the fake driver linked in: its cuInit,
// cuMemAlloc, cuLaunchKernel… are defined in the executable and so take
// precedence over libcuda.so.1 without LD_PRELOAD. What the fake does:
//
//   - Device memory is host memory, each allocation filled with NaN bytes
//     and ending flush against a PROT_NONE guard page; copies and kernel
//     pointer arguments must lie inside one live allocation of the current
//     context.
//   - The current context is tracked per OS thread, as CUDA does: a call
//     from a thread without it fails with CUDA_ERROR_INVALID_CONTEXT.
//   - Modules take the PTX that the real NVRTC (Debian's libnvrtc, which
//     needs no GPU) produced; a kernel is found only if it is an .entry of
//     that PTX and exists in the host build of the same source.
//   - Kernels are compiled by g++ with a small device header and run one
//     thread at a time, the blocks and the threads of a block in an order
//     shuffled per launch. The header refuses __shared__, barriers and warp
//     intrinsics: serial execution is exact only without them.
//   - cuBLAS is a shared library built at setup (libcublas.so.11/12/13,
//     with the real libraries' version nodes) whose Sgemm runs OpenBLAS in
//     column-major order after cuBLAS's own argument checks plus bounds
//     checks of every operand. Its GemmEx checks the same and cuBLAS's
//     table of type and compute-type combinations (NOT_SUPPORTED outside
//     it), and computes fp16 inputs exactly widened to fp32 with fp32 sums,
//     as a GPU's fp16 products with fp32 accumulation do (other supported
//     combinations answer NOT_SUPPORTED, saying the fake lacks them).
//   - A sticky error (illegal address…) can be injected to test recovery.
//
// What it cannot prove: timing, occupancy, real memory limits, races
// between GPU threads, or anything about the PTX JIT and cuBLAS kernels of
// a real device; `make devcheck` prepares that check for a real GPU.
package cudaemu
