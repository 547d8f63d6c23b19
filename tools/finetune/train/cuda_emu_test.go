//go:build cuda && cudaemu

package train

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/leafwatch/leafwatch/internal/cudaemu"
	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/model/cpu"
	"github.com/leafwatch/leafwatch/model/gpu"
)

// Under -tags 'cuda cudaemu' the CUDA trainer runs on the host emulation
// harness (see internal/cudaemu).
func TestMain(m *testing.M) {
	cpu.TuneBLAS()
	if _, err := cudaemu.Setup(gpu.KernelSource()); err != nil {
		fmt.Fprintln(os.Stderr, "cudaemu setup:", err)
		os.Exit(1)
	}
	os.Exit(m.Run())
}

// TestCUDAFinetuneMatchesCPU: a few steps of a full fine-tune (convolutions
// trained, random crops and mirrors, dropout) with --engine cuda give the
// CPU run's mean loss within 1e-3 relative, and every tensor's update
// within 1e-3 of its size.
func TestCUDAFinetuneMatchesCPU(t *testing.T) {
	data := synthData(t, 6)
	ds, err := LoadFolder(data, 0.25, 3)
	if err != nil {
		t.Fatal(err)
	}
	base := baseModel(t, ds.Classes)
	type result struct {
		State
		final *model.Model
	}
	run := func(engine string) result {
		m := baseModel(t, ds.Classes)
		out := t.TempDir()
		cfg := Config{Data: data, Seed: 5, Epochs: 1, BatchSize: 4, Momentum: 0.9, WeightDecay: 5e-4,
			Schedule: Schedule{Kind: "constant", Base: 1e-3}, TrainFrom: "conv1", NewLayerLRMult: 10, ResetPenultimate: true,
			Workers: 2, MaxSteps: 3, Out: out, Log: quiet, Engine: engine}
		tr, err := NewTrainer(cfg, ds, m, NewSGD(m, 0.9, 5e-4), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer tr.Close()
		if engine == "cuda" && tr.dev == nil {
			t.Fatal("the CUDA engine was not selected")
		}
		if _, err := tr.Run(context.Background()); !errors.Is(err, ErrInterrupted) {
			t.Fatalf("%s run: %v", engine, err)
		}
		final, _, st, err := LoadState(filepath.Join(out, "state.safetensors"))
		if err != nil {
			t.Fatal(err)
		}
		return result{st, final}
	}
	cpu, cuda := run("cpu"), run("cuda")
	lc, lg := cpu.LossSum/float64(cpu.Seen), cuda.LossSum/float64(cuda.Seen)
	t.Logf("mean loss over 3 steps: cpu %.6f, cuda %.6f", lc, lg)
	if cpu.Seen != cuda.Seen || math.Abs(lc-lg) > 1e-3*math.Abs(lc) || math.IsNaN(lg) {
		t.Errorf("cpu loss %g over %d images, cuda %g over %d", lc, cpu.Seen, lg, cuda.Seen)
	}
	worst := 0.0
	for name, b := range base.Params {
		c, g := cpu.final.Params[name].Data, cuda.final.Params[name].Data
		var scale, diff float64
		for i := range b.Data {
			dc, dg := float64(c[i])-float64(b.Data[i]), float64(g[i])-float64(b.Data[i])
			scale = max(scale, math.Abs(dc), math.Abs(dg))
			diff = max(diff, math.Abs(dc-dg))
		}
		if scale == 0 {
			t.Errorf("%s did not move: the convolutions should train", name)
			continue
		}
		worst = max(worst, diff/scale)
		if diff/scale > 1e-3 || math.IsNaN(diff) {
			t.Errorf("%s: cuda update differs from cpu by %.3g of its size", name, diff/scale)
		}
	}
	t.Logf("max relative update difference: %.3g", worst)
}
