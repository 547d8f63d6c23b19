// Package cudalib owns finding and binding cuBLAS and NVRTC at run time.
//
// The CUDA engine links only the driver API (libcuda.so.1, the same on
// every driver). cuBLAS and NVRTC change their sonames with every CUDA
// major version (libcublas.so.11/12/13, libnvrtc.so.11.2/12/13), so linking
// them at build time would tie a binary to one CUDA release. Instead this
// package dlopens, at engine start, the newest version the installed driver
// can run, from the loader path, /usr/local/cuda*, JetPack's target folders
// or folders the user names, and resolves the dozen functions the engine
// calls. One binary built against CUDA 11.8 headers then serves CUDA 11.4
// (JetPack 5) through 13.
//
// The package exists only with the build tag cuda.
package cudalib
