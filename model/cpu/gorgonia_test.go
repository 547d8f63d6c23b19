//go:build !cuda

// gorgonia's own cuda tag cannot build (DESIGN.md), so this peer check
// is left out of -tags cuda builds.

package cpu

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/leafwatch/leafwatch/model"
)

// gorgoniaNet builds the torchvision AlexNet as a plain gorgonia expression
// graph over the same weights: the peer our engine is checked and
// benchmarked against. gorgonia has no grouped convolution and no LRN
// operator, so only the torchvision variant can be expressed directly.
type gorgoniaNet struct {
	g    *G.ExprGraph
	x    *G.Node
	prob *G.Node
	vm   G.VM
}

func newGorgoniaNet(m *model.Model, n int) (*gorgoniaNet, error) {
	if m.Spec.Variant != model.TorchVision {
		return nil, fmt.Errorf("gorgonia peer supports torchvision only")
	}
	g := G.NewGraph()
	s := m.Spec.InputSize
	x := G.NewTensor(g, tensor.Float32, 4, G.WithShape(n, 3, s, s), G.WithName("x"))
	param := func(name string) *G.Node {
		p := m.Params[name]
		t := tensor.New(tensor.WithShape(p.Shape...), tensor.WithBacking(p.Data))
		return G.NewTensor(g, tensor.Float32, len(p.Shape), G.WithShape(p.Shape...), G.WithName(name), G.WithValue(t))
	}
	var err error
	cur := x
	for _, l := range m.Spec.Layers {
		switch l.Kind {
		case model.Conv:
			w, b := param(l.Name+".weight"), param(l.Name+".bias")
			if cur, err = G.Conv2d(cur, w, tensor.Shape{l.Kernel, l.Kernel}, []int{l.Pad, l.Pad}, []int{l.Stride, l.Stride}, []int{1, 1}); err != nil {
				return nil, err
			}
			b4, err := G.Reshape(b, tensor.Shape{1, l.Out, 1, 1})
			if err != nil {
				return nil, err
			}
			if cur, err = G.BroadcastAdd(cur, b4, nil, []byte{0, 2, 3}); err != nil {
				return nil, err
			}
		case model.ReLU:
			if cur, err = G.Rectify(cur); err != nil {
				return nil, err
			}
		case model.MaxPool:
			if cur, err = G.MaxPool2D(cur, tensor.Shape{l.Kernel, l.Kernel}, []int{0, 0}, []int{l.Stride, l.Stride}); err != nil {
				return nil, err
			}
		case model.FC:
			if cur.Dims() != 2 {
				if cur, err = G.Reshape(cur, tensor.Shape{n, cur.Shape().TotalSize() / n}); err != nil {
					return nil, err
				}
			}
			w, b := param(l.Name+".weight"), param(l.Name+".bias")
			wt, err := G.Transpose(w)
			if err != nil {
				return nil, err
			}
			if cur, err = G.Mul(cur, wt); err != nil {
				return nil, err
			}
			b2, err := G.Reshape(b, tensor.Shape{1, l.Out})
			if err != nil {
				return nil, err
			}
			if cur, err = G.BroadcastAdd(cur, b2, nil, []byte{0}); err != nil {
				return nil, err
			}
		}
	}
	prob, err := G.SoftMax(cur)
	if err != nil {
		return nil, err
	}
	return &gorgoniaNet{g: g, x: x, prob: prob, vm: G.NewTapeMachine(g)}, nil
}

func (gn *gorgoniaNet) run(x []float32, n, s int) ([]float32, error) {
	if err := G.Let(gn.x, tensor.New(tensor.WithShape(n, 3, s, s), tensor.WithBacking(x))); err != nil {
		return nil, err
	}
	if err := gn.vm.RunAll(); err != nil {
		return nil, err
	}
	defer gn.vm.Reset()
	return append([]float32(nil), gn.prob.Value().Data().([]float32)...), nil
}

// TestMatchesGorgoniaGraph: our engine and a gorgonia expression graph of
// the same torchvision AlexNet agree on the probabilities.
func TestMatchesGorgoniaGraph(t *testing.T) {
	if testing.Short() {
		t.Skip("full-size network in -short mode")
	}
	skipEmulated(t, "TestWholeNetworkMatchesReference checks the arm64 kernels against the Go reference")
	m, err := model.NewRandom(model.TorchVision, 38, 5)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range m.Params {
		if len(p.Shape) == 1 {
			for i := range p.Data {
				p.Data[i] = 0.01 * float32(i%7)
			}
		}
	}
	const n = 2
	x := randInput(rand.New(rand.NewPCG(7, 7)), n*m.InputLen())
	gn, err := newGorgoniaNet(m, n)
	if err != nil {
		t.Fatal(err)
	}
	want, err := gn.run(x, n, m.Spec.InputSize)
	if err != nil {
		t.Fatal(err)
	}
	got := make([]float32, n*38)
	if err := NewClassifier(m, model.Options{}).Probabilities(context.Background(), x, n, got); err != nil {
		t.Fatal(err)
	}
	if _, abs := maxRelDiff(got, f64(want)); abs > 1e-5 {
		t.Fatalf("probabilities differ from gorgonia's by %g", abs)
	}
}

// BenchmarkVsGorgonia runs our engine and the plain gorgonia graph on the
// same weights and input in one process and reports the speed ratio.
func BenchmarkVsGorgonia(b *testing.B) {
	for _, n := range []int{1, 8} {
		b.Run(fmt.Sprintf("batch%d", n), func(b *testing.B) {
			m, err := model.NewRandom(model.TorchVision, 38, 5)
			if err != nil {
				b.Fatal(err)
			}
			x := randInput(rand.New(rand.NewPCG(7, 7)), n*m.InputLen())
			gn, err := newGorgoniaNet(m, n)
			if err != nil {
				b.Fatal(err)
			}
			c := NewClassifier(m, model.Options{MaxBatch: n})
			probs := make([]float32, n*38)
			ctx := context.Background()
			c.Probabilities(ctx, x, n, probs)
			gn.run(x, n, m.Spec.InputSize)
			var ours, theirs time.Duration
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				c.Probabilities(ctx, x, n, probs)
				t1 := time.Now()
				if _, err := gn.run(x, n, m.Spec.InputSize); err != nil {
					b.Fatal(err)
				}
				ours += t1.Sub(t0)
				theirs += time.Since(t1)
			}
			imgs := float64(b.N * n)
			b.ReportMetric(float64(ours.Microseconds())/1000/imgs, "ours_ms/image")
			b.ReportMetric(float64(theirs.Microseconds())/1000/imgs, "gorgonia_ms/image")
			b.ReportMetric(float64(ours)/float64(theirs), "ratio_ours/gorgonia")
		})
	}
}
