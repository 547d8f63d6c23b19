package cpu

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/leafwatch/leafwatch/model"
)

// The reference below is deliberately naive: direct loops in float64
// straight from the layer definitions, sharing no code with the engine.

type ref struct {
	c, h, w int
	v       []float64 // per image
}

func refConv(x ref, wt, b []float32, out, k, stride, pad, groups int) ref {
	cinG, coutG := x.c/groups, out/groups
	oh := (x.h+2*pad-k)/stride + 1
	ow := (x.w+2*pad-k)/stride + 1
	y := ref{out, oh, ow, make([]float64, out*oh*ow)}
	for o := 0; o < out; o++ {
		g := o / coutG
		for oy := 0; oy < oh; oy++ {
			for ox := 0; ox < ow; ox++ {
				s := float64(b[o])
				for ci := 0; ci < cinG; ci++ {
					c := g*cinG + ci
					for ky := 0; ky < k; ky++ {
						for kx := 0; kx < k; kx++ {
							iy, ix := oy*stride-pad+ky, ox*stride-pad+kx
							if iy < 0 || iy >= x.h || ix < 0 || ix >= x.w {
								continue
							}
							s += float64(wt[((o*cinG+ci)*k+ky)*k+kx]) * x.v[(c*x.h+iy)*x.w+ix]
						}
					}
				}
				y.v[(o*oh+oy)*ow+ox] = s
			}
		}
	}
	return y
}

func refRelu(x ref) ref {
	y := ref{x.c, x.h, x.w, make([]float64, len(x.v))}
	for i, v := range x.v {
		y.v[i] = math.Max(v, 0)
	}
	return y
}

func refLRN(x ref, size int, alpha, beta, bias float64) ref {
	y := ref{x.c, x.h, x.w, make([]float64, len(x.v))}
	hw := x.h * x.w
	for c := 0; c < x.c; c++ {
		for i := 0; i < hw; i++ {
			s := 0.0
			for cc := c - (size-1)/2; cc <= c+size/2; cc++ {
				if cc >= 0 && cc < x.c {
					s += x.v[cc*hw+i] * x.v[cc*hw+i]
				}
			}
			y.v[c*hw+i] = x.v[c*hw+i] / math.Pow(bias+alpha/float64(size)*s, beta)
		}
	}
	return y
}

func refPool(x ref, k, stride int, ceil bool) ref {
	f := func(n int) int {
		if ceil {
			o := int(math.Ceil(float64(n-k)/float64(stride))) + 1
			if (o-1)*stride >= n {
				o--
			}
			return o
		}
		return (n-k)/stride + 1
	}
	oh, ow := f(x.h), f(x.w)
	y := ref{x.c, oh, ow, make([]float64, x.c*oh*ow)}
	for c := 0; c < x.c; c++ {
		for oy := 0; oy < oh; oy++ {
			for ox := 0; ox < ow; ox++ {
				m := math.Inf(-1)
				for ky := 0; ky < k; ky++ {
					for kx := 0; kx < k; kx++ {
						iy, ix := oy*stride+ky, ox*stride+kx
						if iy < x.h && ix < x.w {
							m = math.Max(m, x.v[(c*x.h+iy)*x.w+ix])
						}
					}
				}
				y.v[(c*oh+oy)*ow+ox] = m
			}
		}
	}
	return y
}

func refFC(x ref, wt, b []float32, out int) ref {
	in := len(x.v)
	y := ref{out, 1, 1, make([]float64, out)}
	for o := 0; o < out; o++ {
		s := float64(b[o])
		for i := 0; i < in; i++ {
			s += float64(wt[o*in+i]) * x.v[i]
		}
		y.v[o] = s
	}
	return y
}

func refSoftmax(z []float64) []float64 {
	m := math.Inf(-1)
	for _, v := range z {
		m = math.Max(m, v)
	}
	s := 0.0
	p := make([]float64, len(z))
	for i, v := range z {
		p[i] = math.Exp(v - m)
		s += p[i]
	}
	for i := range p {
		p[i] /= s
	}
	return p
}

// refForward runs one layer at a time and returns every layer's output.
func refForward(m *model.Model, img []float32) []ref {
	s := m.Spec.InputSize
	x := ref{3, s, s, make([]float64, len(img))}
	for i, v := range img {
		x.v[i] = float64(v)
	}
	outs := []ref{x}
	for _, l := range m.Spec.Layers {
		switch l.Kind {
		case model.Conv:
			x = refConv(x, m.Params[l.Name+".weight"].Data, m.Params[l.Name+".bias"].Data, l.Out, l.Kernel, l.Stride, l.Pad, l.Groups)
		case model.ReLU:
			x = refRelu(x)
		case model.LRN:
			x = refLRN(x, l.Size, float64(l.Alpha), float64(l.Beta), float64(l.Bias))
		case model.MaxPool:
			x = refPool(x, l.Kernel, l.Stride, l.CeilMode)
		case model.FC:
			x = refFC(x, m.Params[l.Name+".weight"].Data, m.Params[l.Name+".bias"].Data, l.Out)
		}
		outs = append(outs, x)
	}
	return outs
}

// TestLayersMatchReference checks every layer type in isolation, with odd
// sizes, padding, grouping and both pooling roundings.
func TestLayersMatchReference(t *testing.T) {
	cases := []struct {
		name   string
		layers []model.Layer
		in     int
	}{
		{"conv", []model.Layer{{Kind: model.Conv, Name: "c", Out: 6, Kernel: 3, Stride: 1, Pad: 1, Groups: 1}}, 9},
		{"conv-stride-nopad", []model.Layer{{Kind: model.Conv, Name: "c", Out: 4, Kernel: 5, Stride: 2, Groups: 1}}, 13},
		{"conv-big-stride", []model.Layer{{Kind: model.Conv, Name: "c", Out: 4, Kernel: 11, Stride: 4, Pad: 2, Groups: 1}}, 31},
		{"grouped-conv", []model.Layer{
			{Kind: model.Conv, Name: "a", Out: 6, Kernel: 3, Stride: 1, Pad: 1, Groups: 1},
			{Kind: model.Conv, Name: "c", Out: 4, Kernel: 3, Stride: 1, Pad: 1, Groups: 2}}, 7},
		{"relu", []model.Layer{{Kind: model.Conv, Name: "c", Out: 4, Kernel: 1, Stride: 1, Groups: 1}, {Kind: model.ReLU}}, 6},
		{"lrn", []model.Layer{{Kind: model.Conv, Name: "c", Out: 7, Kernel: 1, Stride: 1, Groups: 1}, {Kind: model.LRN, Size: 5, Alpha: 0.3, Beta: 0.75, Bias: 1}}, 5},
		{"lrn-beta", []model.Layer{{Kind: model.Conv, Name: "c", Out: 7, Kernel: 1, Stride: 1, Groups: 1}, {Kind: model.LRN, Size: 3, Alpha: 0.5, Beta: 0.6, Bias: 2}}, 5},
		{"maxpool-floor", []model.Layer{{Kind: model.MaxPool, Kernel: 3, Stride: 2}}, 10},
		{"maxpool-ceil", []model.Layer{{Kind: model.MaxPool, Kernel: 3, Stride: 2, CeilMode: true}}, 10},
		{"fc", []model.Layer{{Kind: model.FC, Name: "f", Out: 5}}, 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			spec := model.Spec{Variant: "test", InputSize: tc.in, Layers: tc.layers}
			shapes, err := spec.Shapes()
			if err != nil {
				t.Fatal(err)
			}
			spec.Classes = shapes[len(shapes)-1].Len()
			m := testModel(t, spec, 7)
			rng := rand.New(rand.NewPCG(1, 2))
			const n = 3
			x := randInput(rng, n*m.InputLen())
			r := newRunner(m, n, false, nil)
			got := r.forward(x, n)
			ol := shapes[len(shapes)-1].Len()
			for j := 0; j < n; j++ {
				outs := refForward(m, x[j*m.InputLen():(j+1)*m.InputLen()])
				want := outs[len(outs)-1]
				if rel, abs := maxRelDiff(got[j*ol:(j+1)*ol], want.v); rel > 1e-5 {
					t.Errorf("image %d: max diff %.3g (relative %.3g)", j, abs, rel)
				}
			}
		})
	}
}

func TestSoftmaxMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	z := randInput(rng, 2*38)
	for i := range z {
		z[i] *= 20 // large logits exercise the max shift
	}
	want := append(refSoftmax(f64(z[:38])), refSoftmax(f64(z[38:]))...)
	softmax(2, 38, z)
	if _, abs := maxRelDiff(z, want); abs > 1e-6 {
		t.Fatalf("softmax differs by %g", abs)
	}
}

// TestWholeNetworkMatchesReference runs both full-size variants on random
// weights and compares every layer's output and the final probabilities.
func TestWholeNetworkMatchesReference(t *testing.T) {
	for _, v := range model.Variants() {
		t.Run(string(v), func(t *testing.T) {
			if v != model.TorchVision {
				// bvlc's own layers (LRN, groups, ceil pools) are checked
				// on arm64 by TestLayersMatchReference and, end to end,
				// by TestProbabilitiesMatchAcrossArchitectures.
				skipEmulated(t, "one variant's whole Go reference pass suffices")
			}
			spec, err := model.NewSpec(v, 38)
			if err != nil {
				t.Fatal(err)
			}
			m := testModel(t, spec, 11)
			rng := rand.New(rand.NewPCG(5, 6))
			const n = 2
			x := randInput(rng, n*m.InputLen())
			c := NewClassifier(m, model.Options{MaxBatch: n})
			probs := make([]float32, n*38)
			if err := c.Probabilities(context.Background(), x, n, probs); err != nil {
				t.Fatal(err)
			}
			r := newRunner(m, n, false, nil)
			r.forward(x, n)
			for j := 0; j < n; j++ {
				outs := refForward(m, x[j*m.InputLen():(j+1)*m.InputLen()])
				for i, l := range m.Spec.Layers {
					ol := m.Shapes()[i+1].Len()
					if i+1 < len(m.Spec.Layers) && m.Spec.Layers[i+1].Kind == model.ReLU {
						continue // the ReLU rewrites this buffer in place
					}
					if rel, abs := maxRelDiff(r.acts[i+1][j*ol:(j+1)*ol], outs[i+1].v); rel > 1e-4 {
						t.Errorf("image %d layer %d (%s %s): max diff %.3g (relative %.3g)", j, i, l.Kind, l.Name, abs, rel)
					}
				}
				want := refSoftmax(outs[len(outs)-1].v)
				if _, abs := maxRelDiff(probs[j*38:(j+1)*38], want); abs > 1e-5 {
					t.Errorf("image %d: probabilities differ by %g", j, abs)
				}
			}
		})
	}
}
