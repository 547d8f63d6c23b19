// Package cpu owns the CPU engine: inference (Classifier, safe for any
// number of goroutines) and training passes (TrainSession) for models of
// package model.
//
// The engine runs a planned sequence of layers over buffers that are
// allocated once per runner and reused, so steady-state inference creates
// no garbage. Training convolves by im2col + SGEMM; SGEMM comes from
// OpenBLAS when cgo is on (the default) and from gonum's pure-Go BLAS when
// built with CGO_ENABLED=0 or -tags purego. The engine splits its large
// kernels over the cores itself (parallel.go), runs the 3×3 and 5×5
// convolutions as Winograd F(2×2, 3×3) and F(3×3, 5×5) (winograd.go,
// winograd5.go) and conv1 as F(2×2, 3×3) over 4×4 pixel blocks
// (spacedepth.go), the passes between GEMMs in C (layers.c), and can hold
// the big fully connected layers in fp16, bf16 or int8 (precision.go,
// fc.h and fc_<arch>.c). The Go kernels (kernels.go) are the references the C and
// Winograd paths are tested against.
package cpu
