//go:build cuda

package gpu

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"gorgonia.org/cu"

	"github.com/leafwatch/leafwatch/model"
)

func needGPU(t testing.TB) {
	if ok, why := Available(); !ok {
		t.Skip("no usable CUDA device: " + why)
	}
}

// TestCUDAMatchesCPU: both variants, several batch sizes, max abs diff on
// probabilities ≤ 1e-4.
func TestCUDAMatchesCPU(t *testing.T) {
	needGPU(t)
	for _, v := range model.Variants() {
		m, _ := model.NewRandom(v, 38, 4)
		for name, p := range m.Params {
			if len(p.Shape) == 1 {
				for i := range p.Data {
					p.Data[i] = 0.02 * float32(i%5)
				}
			}
			_ = name
		}
		ge, err := Select(m, CUDA, model.Options{MaxBatch: 8}, nil)
		if err != nil {
			t.Fatal(err)
		}
		cpu := model.NewClassifier(m, model.Options{MaxBatch: 8})
		for _, n := range []int{1, 3, 8, 11} {
			t.Run(fmt.Sprintf("%s/batch%d", v, n), func(t *testing.T) {
				rng := rand.New(rand.NewPCG(uint64(n), 1))
				x := make([]float32, n*m.InputLen())
				for i := range x {
					x[i] = float32(rng.NormFloat64())
				}
				a, b := make([]float32, n*38), make([]float32, n*38)
				if err := ge.Probabilities(context.Background(), x, n, a); err != nil {
					t.Fatal(err)
				}
				cpu.Probabilities(context.Background(), x, n, b)
				d := 0.0
				for i := range a {
					d = math.Max(d, math.Abs(float64(a[i]-b[i])))
				}
				t.Logf("max |cuda − cpu| = %.3g", d)
				if d > 1e-4 {
					t.Errorf("differs by %g", d)
				}
			})
		}
		ge.Close()
	}
}

// TestCUDAMemoryFlat: device memory does not grow over 1,000 inferences.
func TestCUDAMemoryFlat(t *testing.T) {
	needGPU(t)
	m, _ := model.NewRandom(model.TorchVision, 38, 1)
	ge, err := Select(m, CUDA, model.Options{MaxBatch: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ge.Close()
	x := make([]float32, m.InputLen())
	probs := make([]float32, 38)
	ctx := context.Background()
	free := func() int64 {
		e := ge.(*Engine)
		cu.SetCurrentContext(e.ctx)
		f, _, _ := cu.MemInfo()
		return f
	}
	ge.Probabilities(ctx, x, 1, probs)
	before := free()
	for i := 0; i < 1000; i++ {
		if err := ge.Probabilities(ctx, x, 1, probs); err != nil {
			t.Fatal(err)
		}
	}
	if after := free(); before-after > 1<<20 {
		t.Fatalf("free device memory fell by %d bytes over 1000 inferences", before-after)
	}
}

// TestCUDATrainStepMatchesCPU: one SGD step (forward with dropout,
// backward, momentum and weight decay) on the device gives the CPU step's
// weights within 1e-4 relative to each tensor's scale.
func TestCUDATrainStepMatchesCPU(t *testing.T) {
	needGPU(t)
	for _, v := range model.Variants() {
		t.Run(string(v), func(t *testing.T) {
			cpuM, _ := model.NewRandom(v, 5, 3)
			gpuM, _ := model.NewRandom(v, 5, 3)
			const n = 2
			rng := rand.New(rand.NewPCG(4, 4))
			x := make([]float32, n*cpuM.InputLen())
			for i := range x {
				x[i] = float32(rng.NormFloat64())
			}
			labels := []int{1, 3}
			// CPU reference: session + the same SGD arithmetic.
			s := cpuM.NewTrainSession(n, rand.New(rand.NewPCG(9, 9)))
			s.ZeroGrad()
			lossCPU, _, err := s.Step(x, labels, 0)
			if err != nil {
				t.Fatal(err)
			}
			const lr, mom, decay = 0.01, 0.9, 5e-4
			for name, p := range cpuM.Params {
				d := float32(decay)
				if len(p.Shape) == 1 {
					d = 0
				}
				for i, w := range p.Data {
					vi := s.Grads[name].Data[i] + d*w
					p.Data[i] = w - lr*vi
				}
			}
			tr, err := NewTrainer(gpuM, n, OptimSettings{Momentum: mom, WeightDecay: decay})
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			lossGPU, _, err := tr.Step(0, x, labels, 0, lr, rand.New(rand.NewPCG(9, 9)))
			if err != nil {
				t.Fatal(err)
			}
			if err := tr.Sync(nil); err != nil {
				t.Fatal(err)
			}
			if math.Abs(lossCPU-lossGPU) > 1e-3*math.Max(1, math.Abs(lossCPU)) {
				t.Errorf("loss: cpu %g, cuda %g", lossCPU, lossGPU)
			}
			for name, p := range cpuM.Params {
				q := gpuM.Params[name]
				scale, worst := 1e-6, 0.0
				for i := range p.Data {
					scale = math.Max(scale, math.Abs(float64(p.Data[i])))
					worst = math.Max(worst, math.Abs(float64(p.Data[i]-q.Data[i])))
				}
				if worst/scale > 1e-4 {
					t.Errorf("%s: max diff %g (scale %g)", name, worst, scale)
				}
			}
		})
	}
}
