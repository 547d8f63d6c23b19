package dnncheck

import (
	"os"
	"testing"

	"github.com/leafwatch/leafwatch/model/cpu"
)

// TestMain makes the OpenBLAS kernel choice the programs make, so that
// the comparisons with OpenCV's DNN time what users get.
func TestMain(m *testing.M) {
	cpu.TuneBLAS()
	os.Exit(m.Run())
}
