// Package cu provides an idiomatic interface to the CUDA Driver API.
package cu // import "gorgonia.org/cu"

// This file implements CUDA driver context management

//#include <cuda.h>
import "C"
import (
	"fmt"
)

const initHtml = "https://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__INITIALIZE.html"

// InitError is the error of cuInit at package load, or nil.
//
// Leafwatch patch: upstream prints the error and calls os.Exit(1), so a
// CUDA-enabled binary could not even start on a machine without a GPU and
// could not fall back to the CPU. The error is kept and returned by
// NumDevices and GetDevice instead.
var InitError error

func init() {
	// Given that the flags must be 0, the CUDA driver is initialized at the package level
	// http://docs.nvidia.com/cuda/cuda-driver-api/group__CUDA__INITIALIZE.html
	if err := result(C.cuInit(C.uint(0))); err != nil {
		InitError = fmt.Errorf("CUDA driver initialisation failed (see %s): %w", initHtml, err)
	}
}

// Version returns the version of the CUDA driver
func Version() int {
	var v C.int
	if err := result(C.cuDriverGetVersion(&v)); err != nil {
		return -1
	}
	return int(v)
}
