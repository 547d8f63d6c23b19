//go:build cuda && cudaemu

package engine

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"

	"github.com/leafwatch/leafwatch/internal/cudaemu"
	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/model/gpu"
)

// Under -tags 'cuda cudaemu' the fake CUDA driver is linked into this
// test binary: selection meets a "device".
func TestMain(m *testing.M) {
	h, err := cudaemu.Setup(gpu.KernelSource())
	if err != nil {
		fmt.Fprintln(os.Stderr, "cudaemu setup:", err)
		os.Exit(1)
	}
	gpu.SetLibraryDirs([]string{h.LibDir(11)})
	os.Exit(m.Run())
}

// TestSelectOnTheHarness: auto takes the CUDA engine when a device and
// its libraries are there, and the CPU (saying why) when the libraries
// are missing; cuda then fails with the reason.
func TestSelectOnTheHarness(t *testing.T) {
	m, err := model.NewRandom(model.TorchVision, 3, 1)
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	auto, err := Select(m, Auto, model.Options{MaxBatch: 1}, quiet)
	if err != nil || !strings.HasPrefix(auto.Engine(), "cuda/") {
		t.Fatalf("auto with a device: %v %v", auto, err)
	}
	auto.Close()
	gpu.SetLibraryDirs([]string{t.TempDir()})
	t.Cleanup(func() { gpu.SetLibraryDirs(nil) })
	var logs strings.Builder
	if auto, err := Select(m, Auto, model.Options{}, slog.New(slog.NewTextHandler(&logs, nil))); err != nil || !strings.HasPrefix(auto.Engine(), "cpu/") ||
		!strings.Contains(logs.String(), "no CUDA") {
		t.Errorf("auto without libraries: %v %v, want the CPU and why:\n%s", auto, err, logs.String())
	}
	if _, err := Select(m, CUDA, model.Options{}, quiet); err == nil || !strings.Contains(err.Error(), "no usable cuBLAS") {
		t.Errorf("cuda without libraries: %v", err)
	}
}
