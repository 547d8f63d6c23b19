//go:build cuda

package gpu

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"gorgonia.org/cu"

	"github.com/leafwatch/leafwatch/model"
	"github.com/leafwatch/leafwatch/model/cpu"
)

// These tests run on a real GPU (go test -tags cuda) and, with -tags
// 'cuda cudaemu', on the host emulation harness (internal/cudaemu), which
// runs the same code with fewer iterations. Without either they skip.

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func needGPU(t testing.TB) {
	t.Helper()
	if ok, why := Available(); !ok {
		t.Skip("no usable CUDA device: " + why)
	}
}

// iters scales loop counts down under emulation.
func iters(real, emu int) int {
	if emulated {
		return emu
	}
	return real
}

var (
	modelsMu sync.Mutex
	models   = map[string]*model.Model{}
)

// testModel is a random model with non-zero biases (zero biases hide
// bias-indexing errors). Models are drawn once and copied: drawing 60 M
// weights costs more than most tests.
func testModel(t testing.TB, v model.Variant, classes int, seed uint64) *model.Model {
	t.Helper()
	key := fmt.Sprint(v, classes, seed)
	modelsMu.Lock()
	defer modelsMu.Unlock()
	m, ok := models[key]
	if !ok {
		var err error
		if m, err = model.NewRandom(v, classes, seed); err != nil {
			t.Fatal(err)
		}
		for _, p := range m.Params {
			if len(p.Shape) == 1 {
				for i := range p.Data {
					p.Data[i] = 0.02 * float32(i%5-2)
				}
			}
		}
		models[key] = m
	}
	params := map[string]*model.Tensor{}
	for name, p := range m.Params {
		params[name] = &model.Tensor{Shape: slices.Clone(p.Shape), Data: slices.Clone(p.Data)}
	}
	c, err := model.New(m.Spec, params, m.Meta)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func randInput(n, l int, seed uint64) []float32 {
	rng := rand.New(rand.NewPCG(seed, 1))
	x := make([]float32, n*l)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	return x
}

// maxAbsDiff is the largest |a−b|, NaN if either holds a NaN.
func maxAbsDiff(a, b []float32) float64 {
	var d float32
	for i := range a {
		x := a[i] - b[i]
		if x != x {
			return math.NaN()
		}
		if x < 0 {
			x = -x
		}
		if x > d {
			d = x
		}
	}
	return float64(d)
}

// relDiff is the largest difference relative to the tensors' scale.
func relDiff(a, b []float32) float64 {
	var scale float32 = 1e-6
	for i := range a {
		x, y := a[i], b[i]
		if x < 0 {
			x = -x
		}
		if y < 0 {
			y = -y
		}
		scale = max(scale, x, y)
	}
	return maxAbsDiff(a, b) / float64(scale)
}

// TestCUDAMatchesCPU: both variants, several batch sizes (one above the
// engine's batch, so it splits), max abs diff on probabilities ≤ 1e-4.
func TestCUDAMatchesCPU(t *testing.T) {
	needGPU(t)
	for _, v := range model.Variants() {
		m := testModel(t, v, 38, 4)
		ge, err := New(m, model.Options{MaxBatch: 8}, quiet)
		if err != nil {
			t.Fatal(err)
		}
		cpu := cpu.NewClassifier(m, model.Options{MaxBatch: 8})
		worst := 0.0
		for _, n := range []int{1, 3, 8, 11} {
			t.Run(fmt.Sprintf("%s/batch%d", v, n), func(t *testing.T) {
				x := randInput(n, m.InputLen(), uint64(n))
				a, b := make([]float32, n*38), make([]float32, n*38)
				if err := ge.Probabilities(context.Background(), x, n, a); err != nil {
					t.Fatal(err)
				}
				if err := cpu.Probabilities(context.Background(), x, n, b); err != nil {
					t.Fatal(err)
				}
				d := maxAbsDiff(a, b)
				worst = math.Max(worst, d)
				if d > 1e-4 || math.IsNaN(d) {
					t.Errorf("probabilities differ by %g", d)
				}
			})
		}
		t.Logf("%s: max |cuda − cpu| over batches 1, 3, 8, 11 = %.3g", v, worst)
		if err := ge.Close(); err != nil {
			t.Error(err)
		}
	}
}

// TestCUDAReleasesHostWeights: with Options.ReleaseWeights (leafwatchd's
// setting) the engine drops the host copy of every weight once it is on
// the device, still classifies as the CPU engine does, and a second CUDA
// engine on that model is refused with the reason.
func TestCUDAReleasesHostWeights(t *testing.T) {
	needGPU(t)
	m := testModel(t, model.TorchVision, 38, 4)
	n := 3
	x := randInput(n, m.InputLen(), 7)
	want := make([]float32, n*38)
	if err := cpu.NewClassifier(testModel(t, model.TorchVision, 38, 4), model.Options{MaxBatch: 8}).Probabilities(context.Background(), x, n, want); err != nil {
		t.Fatal(err)
	}
	ge, err := New(m, model.Options{MaxBatch: 8, ReleaseWeights: true}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer ge.Close()
	if r := m.Released(); len(r) != len(m.Params) {
		t.Errorf("released %d of %d parameters", len(r), len(m.Params))
	}
	got := make([]float32, n*38)
	if err := ge.Probabilities(context.Background(), x, n, got); err != nil {
		t.Fatal(err)
	}
	if d := maxAbsDiff(got, want); d > 1e-4 || math.IsNaN(d) {
		t.Errorf("probabilities differ from the CPU engine's by %g", d)
	}
	if _, err := New(m, model.Options{MaxBatch: 8}, quiet); err == nil || !strings.Contains(err.Error(), "released") {
		t.Errorf("a second CUDA engine on the released model: %v", err)
	}
}

// TestCUDALayersMatchCPU runs every layer alone on the CPU engine's input
// for that layer and compares its output, for the compute capabilities of
// Leafwatch's targets (Nano 5.3, TX2 6.2, Xavier 7.2, Orin 8.7, H100/H200
// 9.0), so a failure names the layer. On a real GPU only the device's own
// capability runs.
func TestCUDALayersMatchCPU(t *testing.T) {
	needGPU(t)
	for _, cc := range deviceCCs() {
		for _, v := range model.Variants() {
			t.Run(fmt.Sprintf("sm_%d/%s", cc, v), func(t *testing.T) {
				useCC(t, cc)
				m := testModel(t, v, 5, 11)
				const n = 2
				ge, err := New(m, model.Options{MaxBatch: n}, quiet)
				if err != nil {
					t.Fatal(err)
				}
				defer ge.Close()
				checkTarget(t, cc)
				e := ge.(*Engine)
				s := cpu.NewTrainSession(m, n, nil)
				x := randInput(n, m.InputLen(), 5)
				leave, err := e.d.enter()
				if err != nil {
					t.Fatal(err)
				}
				defer leave()
				in := x
				for i, l := range m.Spec.Layers {
					want := slices.Clone(s.Range(in, n, i, i+1))
					got := runLayer(t, e, i, n, in, len(want))
					if d := relDiff(got, want); d > 1e-5 || math.IsNaN(d) {
						t.Fatalf("layer %d (%s %s) differs from the CPU by %.3g relative", i, l.Kind, l.Name, d)
					}
					in = want
				}
			})
		}
	}
}

// runLayer runs layer i of e alone on n images of input in (host) and
// returns its output's first outLen values. The device must be entered.
func runLayer(t *testing.T, e *Engine, i, n int, in []float32, outLen int) []float32 {
	t.Helper()
	l := e.m.Spec.Layers[i]
	if err := e.d.upload(e.acts[i], in); err != nil {
		t.Fatal(err)
	}
	if err := e.layer(i, n); err != nil {
		t.Fatalf("layer %d (%s %s): %v", i, l.Kind, l.Name, err)
	}
	got := make([]float32, outLen)
	if err := e.d.download(got, e.acts[i+1]); err != nil {
		t.Fatal(err)
	}
	return got
}

// cpuSGD is train.SGD's arithmetic (the train package imports this one).
func cpuSGD(m *model.Model, grads map[string]*model.Tensor, vel map[string][]float32, mult map[string]float32, lr, mom, decay float32) {
	for name, p := range m.Params {
		mu, ok := mult[name]
		if !ok {
			mu = 1
		}
		if mu == 0 {
			continue
		}
		d := decay
		if len(p.Shape) == 1 {
			d = 0
		}
		v, g := vel[name], grads[name].Data
		for i, w := range p.Data {
			vi := mom*v[i] + g[i] + d*w
			v[i] = vi
			p.Data[i] = w - lr*mu*vi
		}
	}
}

func zeroVelocity(m *model.Model) map[string][]float32 {
	v := map[string][]float32{}
	for name, p := range m.Params {
		v[name] = make([]float32, len(p.Data))
	}
	return v
}

// trainBoth runs steps SGD steps on the CPU and on the device from the same
// start and returns both models; from/first select the entry layer and the
// first trained layer.
func trainBoth(t *testing.T, v model.Variant, steps, from, first int, mult map[string]float32) (before, cpuM, gpuM *model.Model, lossCPU, lossGPU []float64) {
	t.Helper()
	before, cpuM, gpuM = testModel(t, v, 5, 3), testModel(t, v, 5, 3), testModel(t, v, 5, 3)
	const n = 2
	const lr, mom, decay = 0.01, 0.9, 5e-4
	labels := []int{1, 3}
	s := cpu.NewTrainSession(cpuM, n, nil)
	vel := zeroVelocity(cpuM)
	tr, err := NewTrainer(gpuM, n, OptimSettings{Momentum: mom, WeightDecay: decay, Mult: mult, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	for step := 0; step < steps; step++ {
		// Small inputs keep the random network's logits moderate, so
		// several steps at this learning rate do not diverge.
		x := randInput(n, cpuM.ActLen(from), uint64(step+10))
		for i := range x {
			x[i] *= 0.1
		}
		s.SetRand(rand.New(rand.NewPCG(9, uint64(step))))
		s.ZeroGrad()
		l, _, err := s.StepFrom(from, x, labels, first)
		if err != nil {
			t.Fatal(err)
		}
		cpuSGD(cpuM, s.Grads, vel, mult, lr, mom, decay)
		g, _, err := tr.Step(from, x, labels, first, lr, rand.New(rand.NewPCG(9, uint64(step))))
		if err != nil {
			t.Fatal(err)
		}
		lossCPU, lossGPU = append(lossCPU, l), append(lossGPU, g)
	}
	t.Logf("losses: cpu %.4g, cuda %.4g", lossCPU, lossGPU)
	if err := tr.Sync(nil); err != nil {
		t.Fatal(err)
	}
	return before, cpuM, gpuM, lossCPU, lossGPU
}

// compareUpdates compares what training changed: each tensor's update
// (after − before) on the device against the CPU's, relative to the
// update's size. Comparing the weights themselves would hide a wrong
// update much smaller than the weights.
func compareUpdates(t *testing.T, before, cpuM, gpuM *model.Model, tol float64) {
	t.Helper()
	worst := 0.0
	for _, name := range model.SortedParamNames(cpuM) {
		b, c, g := before.Params[name].Data, cpuM.Params[name].Data, gpuM.Params[name].Data
		var scale, diff float64
		for i := range b {
			dc, dg := float64(c[i])-float64(b[i]), float64(g[i])-float64(b[i])
			scale = max(scale, math.Abs(dc), math.Abs(dg))
			diff = max(diff, math.Abs(dc-dg))
		}
		if scale == 0 {
			continue // frozen on both
		}
		d := diff / scale
		worst = math.Max(worst, d)
		if d > tol || math.IsNaN(d) {
			t.Errorf("%s: the update differs by %.3g relative to its size", name, d)
		}
	}
	t.Logf("updates: max relative |cuda − cpu| = %.3g", worst)
}

func compareLosses(t *testing.T, a, b []float64) {
	t.Helper()
	for i := range a {
		if math.Abs(a[i]-b[i]) > 1e-3*math.Max(1, math.Abs(a[i])) {
			t.Errorf("step %d loss: cpu %g, cuda %g", i, a[i], b[i])
		}
	}
}

// TestCUDATrainStepMatchesCPU: one SGD step (forward with dropout,
// backward, weight decay) on the device gives the CPU step's weights within
// 1e-4 relative to each tensor's scale.
func TestCUDATrainStepMatchesCPU(t *testing.T) {
	needGPU(t)
	for _, v := range model.Variants() {
		t.Run(string(v), func(t *testing.T) {
			b, cpuM, gpuM, lc, lg := trainBoth(t, v, 1, 0, 0, nil)
			compareLosses(t, lc, lg)
			compareUpdates(t, b, cpuM, gpuM, 1e-3)
		})
	}
}

// TestCUDAMomentumSteps: three steps, so momentum carries gradients from
// step to step, with a learning-rate multiplier on the head.
func TestCUDAMomentumSteps(t *testing.T) {
	needGPU(t)
	mult := map[string]float32{"classifier.6.weight": 2, "classifier.6.bias": 2}
	b, cpuM, gpuM, lc, lg := trainBoth(t, model.TorchVision, 3, 0, 0, mult)
	compareLosses(t, lc, lg)
	compareUpdates(t, b, cpuM, gpuM, 1e-3)
}

// TestCUDAFrozenLayers: layers before the first trained one do not move
// at all (frozen = multiplier 0 and no gradient), the others match the CPU.
func TestCUDAFrozenLayers(t *testing.T) {
	needGPU(t)
	orig := testModel(t, model.BVLC, 5, 3)
	first, _ := orig.FirstLayerOfGroup("conv4")
	mult := map[string]float32{}
	for i, l := range orig.Spec.Layers {
		if i < first && l.Name != "" {
			mult[l.Name+".weight"], mult[l.Name+".bias"] = 0, 0
		}
	}
	b, cpuM, gpuM, lc, lg := trainBoth(t, model.BVLC, 2, 0, first, mult)
	compareLosses(t, lc, lg)
	compareUpdates(t, b, cpuM, gpuM, 1e-3)
	for i, l := range orig.Spec.Layers {
		if i >= first || l.Name == "" {
			continue
		}
		for _, s := range []string{".weight", ".bias"} {
			if !slices.Equal(orig.Params[l.Name+s].Data, gpuM.Params[l.Name+s].Data) {
				t.Errorf("frozen %s%s moved on the device", l.Name, s)
			}
		}
	}
}

// TestCUDATrainFromFeatures: batches that enter at the first fully
// connected layer (cached conv features), as finetune --cache-features does.
func TestCUDATrainFromFeatures(t *testing.T) {
	needGPU(t)
	m := testModel(t, model.TorchVision, 5, 3)
	from := 0
	for i, l := range m.Spec.Layers {
		if l.Kind == model.Dropout {
			from = i
			break
		}
	}
	b, cpuM, gpuM, lc, lg := trainBoth(t, model.TorchVision, 2, from, from+1, nil)
	compareLosses(t, lc, lg)
	compareUpdates(t, b, cpuM, gpuM, 1e-3)
}

// TestCUDATrainingIsDeterministic: two identical runs give identical bytes
// (the max-pool backward gathers instead of adding atomically).
func TestCUDATrainingIsDeterministic(t *testing.T) {
	needGPU(t)
	run := func() *model.Model {
		_, _, g, _, _ := trainBoth(t, model.BVLC, 2, 0, 0, nil)
		return g
	}
	a, b := run(), run()
	for _, name := range model.SortedParamNames(a) {
		if !slices.Equal(a.Params[name].Data, b.Params[name].Data) {
			t.Errorf("%s differs between two identical runs", name)
		}
	}
}

// TestCUDATrainerChecksBatch: batches larger than the device buffers are
// refused, not written past them.
func TestCUDATrainerChecksBatch(t *testing.T) {
	needGPU(t)
	m := testModel(t, model.TorchVision, 5, 3)
	tr, err := NewTrainer(m, 2, OptimSettings{Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	x := randInput(3, m.InputLen(), 1)
	if _, err := tr.Logits(0, x, 3); err == nil {
		t.Error("Logits accepted 3 images on a trainer for 2")
	}
	if _, err := tr.Features(x, 3, 4); err == nil {
		t.Error("Features accepted 3 images on a trainer for 2")
	}
	if _, err := tr.Features(x[:10], 1, 4); err == nil {
		t.Error("Features accepted an input shorter than one image")
	}
	if _, _, err := tr.Step(0, x, []int{0, 1, 2}, 0, 0.01, rand.New(rand.NewPCG(1, 1))); err == nil {
		t.Error("Step accepted 3 images on a trainer for 2")
	}
	if _, err := tr.Logits(0, x, 2); err != nil {
		t.Errorf("a batch that fits: %v", err)
	}
}

// TestCUDACloseTwice: closing twice is harmless and use after close is a
// clear error.
func TestCUDACloseTwice(t *testing.T) {
	needGPU(t)
	m := testModel(t, model.TorchVision, 3, 1)
	e, err := New(m, model.Options{MaxBatch: 1}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if err := e.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := e.Probabilities(context.Background(), make([]float32, m.InputLen()), 1, make([]float32, 3)); err == nil {
		t.Error("inference after Close succeeded")
	}
	tr, err := NewTrainer(m, 1, OptimSettings{Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
	if err := tr.Close(); err != nil {
		t.Errorf("second trainer Close: %v", err)
	}
	if _, err := tr.Logits(0, make([]float32, m.InputLen()), 1); err == nil {
		t.Error("trainer use after Close succeeded")
	}
}

// freeMemory reads the device's free memory with the engine's context
// current on a locked thread.
func freeMemory(t *testing.T, e *Engine) int64 {
	t.Helper()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := cu.SetCurrentContext(e.d.ctx); err != nil {
		t.Fatal(err)
	}
	free, _, err := cu.MemInfo()
	if err != nil {
		t.Fatal(err)
	}
	return free
}

// TestCUDAMemoryFlat: device memory does not grow over repeated
// inferences (1,000 on a GPU, 50 under emulation).
func TestCUDAMemoryFlat(t *testing.T) {
	needGPU(t)
	m := testModel(t, model.TorchVision, 38, 1)
	ge, err := New(m, model.Options{MaxBatch: 1}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	defer ge.Close()
	e := ge.(*Engine)
	x := make([]float32, m.InputLen())
	probs := make([]float32, 38)
	ctx := context.Background()
	if err := ge.Probabilities(ctx, x, 1, probs); err != nil {
		t.Fatal(err)
	}
	before := freeMemory(t, e)
	for i := 0; i < iters(1000, 50); i++ {
		if err := ge.Probabilities(ctx, x, 1, probs); err != nil {
			t.Fatal(err)
		}
	}
	if after := freeMemory(t, e); before-after > 1<<20 {
		t.Fatalf("free device memory fell by %d bytes", before-after)
	}
}

func TestChooseArch(t *testing.T) {
	nvrtc118 := []int{35, 37, 50, 52, 53, 60, 61, 62, 70, 72, 75, 80, 86, 87, 89, 90}
	for _, c := range []struct {
		cc, want int
		fails    bool
	}{{53, 53, false}, {87, 87, false}, {90, 90, false}, {100, 90, false}, {120, 90, false}, {88, 87, false}, {30, 0, true}} {
		got, err := chooseArch(c.cc, nvrtc118)
		if (err != nil) != c.fails || got != c.want {
			t.Errorf("sm_%d: got compute_%d, %v; want %d (fails %v)", c.cc, got, err, c.want, c.fails)
		}
	}
}
