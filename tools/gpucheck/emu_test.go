//go:build cuda && cudaemu

package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/leafwatch/leafwatch/internal/cudaemu"
	"github.com/leafwatch/leafwatch/model/gpu"
)

// gpucheck on the host emulation harness (make test-cuda-emu): what the
// devcheck bundle runs on a real GPU, checked here for its own logic —
// both variants and precisions compared and timed, the report and the
// files torch_compare.py reads written.

func TestMain(m *testing.M) {
	if _, err := cudaemu.Setup(gpu.KernelSource()); err != nil {
		fmt.Fprintln(os.Stderr, "cudaemu setup:", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

func TestCheckOnTheHarness(t *testing.T) {
	dir := t.TempDir()
	save := filepath.Join(dir, "torchvision.safetensors")
	rep, err := check([]int{1, 3}, 1, save, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Pass {
		t.Errorf("the check failed on the harness: %+v", rep.Results)
	}
	if len(rep.Results) != 8 {
		t.Fatalf("%d results, want 2 variants × 2 precisions × 2 batch sizes", len(rep.Results))
	}
	mb := map[string]float64{}
	for _, r := range rep.Results {
		if r.MSPerImage <= 0 || r.DeviceMB <= 0 || r.Engine == "" {
			t.Errorf("result without figures: %+v", r)
		}
		mb[r.Variant+"/"+r.Precision] = r.DeviceMB
	}
	for _, v := range []string{"torchvision", "bvlc"} {
		if mb[v+"/fp16"] >= 0.6*mb[v+"/fp32"] {
			t.Errorf("%s: fp16 engine %.0f MB, fp32 %.0f MB: fp16 should hold about half", v, mb[v+"/fp16"], mb[v+"/fp32"])
		}
	}
	if len(rep.Probe) != 38 || len(rep.ProbeFP16) != 38 {
		t.Errorf("probes of %d and %d probabilities, want 38 each", len(rep.Probe), len(rep.ProbeFP16))
	}
	for _, f := range []string{save, save + ".input"} {
		if st, err := os.Stat(f); err != nil || st.Size() == 0 {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// TestCheckOnAnOldGPU: on a GPU without fp16 arithmetic (5.2) the fp16
// rows are skipped, not failed: the engine runs fp32 there by design.
func TestCheckOnAnOldGPU(t *testing.T) {
	cudaemu.Configure(cudaemu.Device{Major: 5, Minor: 2})
	defer cudaemu.Configure(cudaemu.Device{})
	rep, err := check([]int{1}, 1, "", slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Pass || len(rep.Results) != 2 {
		t.Fatalf("pass %v with %d results, want a pass with the two fp32 rows", rep.Pass, len(rep.Results))
	}
	for _, r := range rep.Results {
		if r.Precision != "fp32" {
			t.Errorf("a %s row on a 5.2 GPU", r.Precision)
		}
	}
	if len(rep.ProbeFP16) != 0 {
		t.Error("an fp16 probe from a GPU that computed fp32")
	}
}
