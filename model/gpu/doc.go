// Package gpu owns the CUDA engine on gorgonia.org/cu (driver API,
// cuBLAS, NVRTC): inference (New) and training (NewTrainer). Choosing it or
// the CPU (auto | cpu | cuda) is package model/engine's.
//
// The engine exists only in binaries built with -tags cuda; elsewhere
// asking for it is a clear error (and engine's "auto" picks the CPU). Kernels are CUDA
// C in kernels.cu, embedded in the binary and compiled with NVRTC when the
// engine starts, for the GPU actually present: one binary then serves every
// Jetson (Nano sm_53, TX2 sm_62, Xavier sm_72, Orin sm_87) and desktop GPU,
// and no nvcc is needed to build. The cost is a compile of about a second at
// start.
package gpu
