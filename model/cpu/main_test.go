package cpu

import (
	"os"
	"testing"
)

// TestMain makes the OpenBLAS kernel choice the programs make, so that
// `go test -bench` times what users get.
func TestMain(m *testing.M) {
	TuneBLAS()
	os.Exit(m.Run())
}
