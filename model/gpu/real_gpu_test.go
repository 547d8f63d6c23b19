//go:build cuda && !cudaemu

package gpu

import "testing"

const emulated = false

// deviceCCs on a real GPU is the device's own compute capability.
func deviceCCs() []int { return []int{0} }

func useCC(testing.TB, int) {}

func checkTarget(testing.TB, int) {}
