package cu

// This file provides CGO flags to find CUDA libraries and headers.
//
// Leafwatch patch: upstream also adds -I/usr/include and
// -L/usr/lib/x86_64-linux-gnu, host paths that break cross builds against a
// sysroot (host glibc headers and amd64 libraries ahead of the target's).
// The compiler finds Debian's cuda.h and libcuda.so in its default paths;
// these add the CUDA toolkit's and JetPack's own folders.

//#cgo LDFLAGS: -lcuda
//#cgo linux CFLAGS: -I/usr/local/cuda/include
//#cgo linux LDFLAGS: -L/usr/local/cuda/lib64 -L/usr/local/cuda/lib64/stubs
//#cgo linux,amd64 CFLAGS: -I/usr/local/cuda/targets/x86_64-linux/include
//#cgo linux,arm64 CFLAGS: -I/usr/local/cuda/targets/aarch64-linux/include
//#cgo linux,arm64 LDFLAGS: -L/usr/lib/aarch64-linux-gnu/tegra -L/usr/lib/aarch64-linux-gnu/nvidia -L/usr/local/cuda/targets/aarch64-linux/lib/stubs
import "C"
