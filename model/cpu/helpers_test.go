package cpu

import (
	"math"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/leafwatch/leafwatch/model"
)

// Helpers the engine's tests share.

func randInput(rng *rand.Rand, n int) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	return x
}

func maxRelDiff(got []float32, want []float64) (float64, float64) {
	scale := 1e-6
	for _, v := range want {
		scale = math.Max(scale, math.Abs(v))
	}
	worst := 0.0
	for i, v := range want {
		worst = math.Max(worst, math.Abs(float64(got[i])-v))
	}
	return worst / scale, worst
}

func f64(x []float32) []float64 {
	y := make([]float64, len(x))
	for i, v := range x {
		y[i] = float64(v)
	}
	return y
}

// testModel gives a model with random weights and biases for any spec.
func testModel(t testing.TB, spec model.Spec, seed uint64) *model.Model {
	t.Helper()
	ps, err := spec.Params()
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(seed, 9))
	params := map[string]*model.Tensor{}
	for _, p := range ps {
		tt := model.NewTensor(p.Shape...)
		if len(p.Shape) > 1 {
			model.InitHe(tt, rng)
		} else {
			for i := range tt.Data {
				tt.Data[i] = float32(rng.NormFloat64()) * 0.1
			}
		}
		params[p.Name] = tt
	}
	m, err := model.New(spec, params, model.Metadata{})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// randActs is n values, normal, with a few special ones (NaN, ±0, a
// value far out) at fixed places: what the references do with them, the
// kernels must do too.
func randActs(rng *rand.Rand, n int, specials bool) []float32 {
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	if specials && n > 100 {
		x[7], x[19], x[50], x[99] = float32(math.NaN()), float32(math.Copysign(0, -1)), 0, 1e30
	}
	return x
}

func sameBits(a, b float32) bool {
	return math.Float32bits(a) == math.Float32bits(b) || (a != a && b != b)
}

// smallSpec has one of every trainable layer type at a size where finite
// differences are cheap: grouped conv, LRN, ceil-mode pooling, FC.
func smallSpec() model.Spec {
	return model.Spec{Variant: "test", Classes: 5, InputSize: 11, Layers: []model.Layer{
		{Kind: model.Conv, Name: "c1", Group: "conv1", Out: 4, Kernel: 3, Stride: 2, Pad: 1, Groups: 1},
		{Kind: model.ReLU},
		{Kind: model.LRN, Size: 3, Alpha: 0.5, Beta: 0.75, Bias: 1},
		{Kind: model.MaxPool, Kernel: 3, Stride: 2, CeilMode: true},
		{Kind: model.Conv, Name: "c2", Group: "conv2", Out: 6, Kernel: 3, Stride: 1, Pad: 1, Groups: 2},
		{Kind: model.ReLU},
		{Kind: model.FC, Name: "f1", Group: "fc1", Out: 7},
		{Kind: model.ReLU},
		{Kind: model.Dropout, P: 0},
		{Kind: model.FC, Name: "f2", Group: "fc2", Out: 5},
	}}
}

// skipEmulated skips what is the host's logic, not arm64's, when the tests
// run under qemu (make test-arm64 sets LEAFWATCH_EMULATED): AlexNet passes
// take seconds there, and the amd64 run covers the logic.
func skipEmulated(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("LEAFWATCH_EMULATED") != "" {
		t.Skip("under emulation: " + why)
	}
}
