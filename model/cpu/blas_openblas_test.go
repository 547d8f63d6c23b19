//go:build cgo && !purego

package cpu

import "testing"

// TestSmallGEMMForKernel: row blocks are cut for OpenBLAS's small-matrix
// kernels only where the kernel OpenBLAS runs has them (its AVX-512
// cores), and the engine's choice is the one for the kernel loaded.
func TestSmallGEMMForKernel(t *testing.T) {
	for core, want := range map[string]int{
		"SkylakeX": 1e6, "Cooperlake": 1e6, "SapphireRapids": 1e6,
		"Haswell": 0, "Zen": 0, "Prescott": 0, "NEOVERSEN1": 0, "ARMV8": 0, "": 0,
	} {
		if got := smallGEMMFor(core); got != want {
			t.Errorf("%q: %d, want %d", core, got, want)
		}
	}
	if got, want := blasSmallGEMM(), smallGEMMFor(blasCoreName()); got != want {
		t.Errorf("the engine uses %d with OpenBLAS's %s kernel, want %d", got, blasCoreName(), want)
	}
}
