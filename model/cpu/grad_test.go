package cpu

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/leafwatch/leafwatch/model"
)

// TestGradientsMatchFiniteDifferences compares the analytic gradient of the
// cross-entropy with central differences for every parameter of a small
// network, in float64 arithmetic on the loss.
func TestGradientsMatchFiniteDifferences(t *testing.T) {
	m := testModel(t, smallSpec(), 21)
	rng := rand.New(rand.NewPCG(8, 8))
	const n = 3
	x := randInput(rng, n*m.InputLen())
	labels := []int{0, 3, 4}
	s := NewTrainSession(m, n, rand.New(rand.NewPCG(1, 1)))
	s.ZeroGrad()
	if _, _, err := s.Step(x, labels, 0); err != nil {
		t.Fatal(err)
	}
	const eps = 1e-3
	checked, bad := 0, 0
	for _, name := range model.SortedParamNames(m) {
		p := m.Params[name]
		g := s.Grads[name]
		for i := range p.Data {
			orig := p.Data[i]
			p.Data[i] = orig + eps
			lp := s.Loss(x, labels)
			p.Data[i] = orig - eps
			lm := s.Loss(x, labels)
			p.Data[i] = orig
			num := (lp - lm) / (2 * eps)
			ana := float64(g.Data[i])
			checked++
			if math.Abs(num-ana) > 1e-3+2e-2*math.Abs(num) {
				bad++
				if bad < 10 {
					t.Errorf("%s[%d]: analytic %.6g, numeric %.6g", name, i, ana, num)
				}
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d gradients disagree", bad, checked)
	}
	t.Logf("checked %d parameter gradients", checked)
}

// TestFrozenLayersGetNoGradient checks that stopping backward at a layer
// leaves earlier groups' gradients at zero and later ones unchanged.
func TestFrozenLayersGetNoGradient(t *testing.T) {
	m := testModel(t, smallSpec(), 5)
	rng := rand.New(rand.NewPCG(2, 2))
	x := randInput(rng, 2*m.InputLen())
	full := NewTrainSession(m, 2, rand.New(rand.NewPCG(1, 1)))
	full.Step(x, []int{1, 2}, 0)
	part := NewTrainSession(m, 2, rand.New(rand.NewPCG(1, 1)))
	stop, _ := m.Spec.LayerByGroup("conv2")
	part.Step(x, []int{1, 2}, stop)
	for name, g := range part.Grads {
		nonzero := false
		for _, v := range g.Data {
			nonzero = nonzero || v != 0
		}
		frozen := name == "c1.weight" || name == "c1.bias"
		if frozen && nonzero {
			t.Errorf("%s is frozen but got a gradient", name)
		}
		if !frozen {
			for i, v := range g.Data {
				if v != full.Grads[name].Data[i] {
					t.Fatalf("%s[%d] = %g, full backward gave %g", name, i, v, full.Grads[name].Data[i])
				}
			}
		}
	}
}

// TestDropoutBackwardUsesKeptScale guards against gorgonia's defect of
// scaling dropout's gradient by 1/p instead of 1/(1-p).
func TestDropoutBackwardUsesKeptScale(t *testing.T) {
	spec := model.Spec{Variant: "test", Classes: 3, InputSize: 2, Layers: []model.Layer{
		{Kind: model.FC, Name: "a", Out: 400},
		{Kind: model.Dropout, P: 0.25},
		{Kind: model.FC, Name: "b", Out: 3},
	}}
	m := testModel(t, spec, 3)
	x := randInput(rand.New(rand.NewPCG(4, 4)), m.InputLen())
	s := NewTrainSession(m, 1, rand.New(rand.NewPCG(9, 9)))
	s.Step(x, []int{1}, 0)
	mask := s.r.mask[1][:400]
	kept := 0
	for _, v := range mask {
		switch v {
		case 0:
		case 1 / (1 - 0.25):
			kept++
		default:
			t.Fatalf("mask value %g, want 0 or %g", v, 1/(1-0.25))
		}
	}
	if kept < 250 || kept > 350 {
		t.Fatalf("kept %d of 400 units at p=0.25", kept)
	}
}
