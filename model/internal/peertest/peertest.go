// Package peertest owns the inputs the peer cross-checks share
// (model/dnncheck against OpenCV DNN, model/ortcheck against
// onnxruntime): one test model and one input generator, so both peers
// are compared on the same kind of network.
package peertest

import (
	"maps"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"testing"

	"github.com/leafwatch/leafwatch/model"
)

// Model is a random 38-class model of variant v with random biases (a
// dropped bias would show) and a last layer scaled ×8, so the
// probabilities are not all near 1/38.
func Model(t testing.TB, v model.Variant) *model.Model {
	t.Helper()
	m, err := model.NewRandom(v, 38, 12)
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 1))
	// In name order: the same biases every run.
	for _, name := range slices.Sorted(maps.Keys(m.Params)) {
		if p := m.Params[name]; len(p.Shape) == 1 {
			for i := range p.Data {
				p.Data[i] = float32(rng.NormFloat64()) * 0.05
			}
		}
	}
	for i := range m.Params["classifier.6.weight"].Data {
		m.Params["classifier.6.weight"].Data[i] *= 8
	}
	return m
}

// Input is n standard-normal floats from seed.
func Input(n int, seed uint64) []float32 {
	rng := rand.New(rand.NewPCG(seed, 3))
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
	}
	return x
}

// FreshHeap collects the previous benchmark rows' models and sessions and
// hands their memory back before a row builds its own. Without it, our
// engine measured 8.2–9.4 ms/image at torchvision batch 8 after the batch-1
// row (5.5–5.6 alone; onnxruntime unchanged at 7.0).
func FreshHeap() { debug.FreeOSMemory() } // collects first, then hands back
