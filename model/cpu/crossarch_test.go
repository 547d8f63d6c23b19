package cpu

import (
	"context"
	"encoding/json"
	"flag"
	"math"
	"math/rand/v2"
	"os"
	"runtime"
	"testing"

	"github.com/leafwatch/leafwatch/model"
)

var updateGolden = flag.Bool("update-golden", false, "rewrite testdata/probabilities-amd64.json (on amd64 only)")

const goldenFile = "testdata/probabilities-amd64.json"

// goldenProbabilities computes, for each variant, a seeded model's
// probabilities for a seeded batch of two images.
func goldenProbabilities(t *testing.T) map[model.Variant][]float32 {
	out := map[model.Variant][]float32{}
	for _, v := range model.Variants() {
		m, err := model.NewRandom(v, 38, 21)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range m.Params {
			if len(p.Shape) == 1 {
				for i := range p.Data {
					p.Data[i] = 0.01 * float32(i%7-3)
				}
			}
		}
		rng := rand.New(rand.NewPCG(21, 2))
		x := make([]float32, 2*m.InputLen())
		for i := range x {
			x[i] = float32(rng.NormFloat64())
		}
		probs := make([]float32, 2*38)
		if err := NewClassifier(m, model.Options{MaxBatch: 2}).Probabilities(context.Background(), x, 2, probs); err != nil {
			t.Fatal(err)
		}
		out[v] = probs
	}
	return out
}

// TestProbabilitiesMatchAcrossArchitectures: the CPU engine gives the
// probabilities recorded on amd64 on every architecture (arm64 runs this
// under qemu in CI) and BLAS (OpenBLAS, gonum), within 1e-5.
func TestProbabilitiesMatchAcrossArchitectures(t *testing.T) {
	got := goldenProbabilities(t)
	if *updateGolden {
		if runtime.GOARCH != "amd64" {
			t.Fatal("the golden file is recorded on amd64")
		}
		b, _ := json.MarshalIndent(got, "", " ")
		if err := os.WriteFile(goldenFile, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	b, err := os.ReadFile(goldenFile)
	if err != nil {
		t.Fatal(err)
	}
	var want map[model.Variant][]float32
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	for _, v := range model.Variants() {
		w, g := want[v], got[v]
		if len(w) != len(g) {
			t.Fatalf("%s: golden holds %d probabilities, computed %d", v, len(w), len(g))
		}
		d := 0.0
		for i := range w {
			d = math.Max(d, math.Abs(float64(w[i]-g[i])))
		}
		t.Logf("%s on %s/%s: max |p − amd64 golden| = %.3g", v, runtime.GOARCH, blasName, d)
		if d > 1e-5 || math.IsNaN(d) {
			t.Errorf("%s: probabilities differ from amd64's by %g", v, d)
		}
	}
}
