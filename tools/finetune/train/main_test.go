//go:build !(cuda && cudaemu)

package train

import (
	"os"
	"testing"

	"github.com/leafwatch/leafwatch/model/cpu"
)

// TestMain makes the OpenBLAS kernel choice finetune makes, so that the
// training benchmarks time what users get (cuda_emu_test.go has the same
// for the emulation harness's build).
func TestMain(m *testing.M) {
	cpu.TuneBLAS()
	os.Exit(m.Run())
}
